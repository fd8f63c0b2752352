"""The spiking-attention blocks: one family, each block a Conv-BN-neuron projection per branch around a
fused operator of ``spikeops.ops``.

* ``TokenQKAttention`` / ``ChannelQKAttention``: QKFormer's Q-K attention (``spikeops.ops.attention``).
* ``SpikingSelfAttention``: Spikformer SSA (ImageNet form; QKFormer stage 3).
* ``SpikeDrivenSelfAttention``: Spike-driven Transformer v1 SDSA.
* ``BipolarSelfAttention``: bipolar self-attention, BSA (``spikeops.ops.bipolar_attention``).
* ``EMSA`` / ``EMSP``: SEMM's experts-mixture attention and MLP (``spikeops.ops.experts_mixture``).

Every block derives from ``SpikingBlock`` and takes ``stateless``:

* ``stateless=False`` (default): SpikingJelly-style neurons whose membranes persist across calls until
  ``reset()``. Sub-module names follow the official code (``q_conv``, ``q_bn``, ``q_lif``, ...), so
  official checkpoints load with ``load_state_dict``.
* ``stateless=True``: every neuron starts from rest at every call and keeps no state (the reference
  backbones of ``spikeops.models``: no ``reset_net``, DDP and ``torch.compile`` unchanged). The Q-K and
  self-attention blocks then take the backbones' layout, one ``ConvBN`` per branch (``q.conv``, ``q.bn``)
  and ``LIFNeuron`` neurons; the other blocks keep their names and wrap each neuron in a
  ``StatelessNeuron``. Parameter names are those of the backbones' checkpoints either way.

Neurons are the official models' LIF (``official_lif``: tau 2, detached hard reset to 0, threshold 1,
Sigmoid(alpha=4)). The attention neuron (threshold 0.5) is part of the fused operator and starts from
rest at every call. Tensors are time-major ``[T, B, C, H, W]``; the linear layers run on ``[T*B, ...]`` as
the official code does.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import attention as attention_ops
from ..ops.bipolar_attention.op import NORM_CODES, bipolar_attention
from ..ops.experts_mixture.op import experts_mixture
from .common import ConvBN, check_block_input, check_finite, check_heads, positive_int
from .multibit import BipolarLIF
from .batchnorm_fusion import batchnorm_then_neuron
from .neurons import BaseNeuron, check_backend, official_lif
from .stateless import make_stateless

__all__ = ["SpikingBlock", "TokenQKAttention", "ChannelQKAttention", "SpikingSelfAttention",
           "SpikeDrivenSelfAttention", "BipolarSelfAttention", "EMSA", "EMSP", "token_qk_core",
           "self_attention_core", "SSA_SCALE"]

SSA_SCALE = 0.125


# ---------------------------------------------------------------- attention cores
def token_qk_core(q: torch.Tensor, k: torch.Tensor, num_heads: int, backend: str) -> torch.Tensor:
    """QKTA core: per head, ``A = SN_0.5(Σ_c Q)`` over the head's channels, output ``A ⊙ K``.
    q, k: spikes [T, B, C, N]; returns [T, B, C, N]."""
    return attention_ops.qk_token_attention(q, k, num_heads, backend=backend)


def self_attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float,
                        backend: str) -> torch.Tensor:
    """Spikformer SSA core: per head ``SN_0.5(Q Kᵀ V · scale)`` in token-major terms.
    q, k, v: LIF spikes [T, B, C, N] (channel-major, as the ImageNet code lays them out); returns [T, B, C, N]."""
    return attention_ops.spiking_self_attention(q, k, v, num_heads, scale=scale, spike_operands=True,
                                                backend=backend)


def _check_input(x: torch.Tensor, dim: int) -> None:
    """The input check of the Q-K / self-attention blocks (their error message predates check_block_input)."""
    if x.dim() != 5 or x.shape[2] != dim:
        raise ValueError(f"x: expected [T, B, C={dim}, H, W], got shape {tuple(x.shape)}")


# ---------------------------------------------------------------- the family's base
class SpikingBlock(nn.Module):
    """Shared plumbing: branches SN(BN(Conv(x))) on [T*B, ...] as the official code runs them, ``reset()``
    for every neuron, and the ``stateless`` option (see the module docstring)."""

    def __init__(self, backend: str = "auto", stateless: bool = False):
        super().__init__()
        self.backend, self.stateless = check_backend(backend), bool(stateless)

    def neuron(self, v_threshold: float = 1.0) -> nn.Module:
        """A branch neuron: the official LIF, stateless or not as the block is."""
        return official_lif(self.backend, v_threshold, stateless=self.stateless)

    def _add_branches(self, dim: int, names, conv=nn.Conv1d, bn=nn.BatchNorm1d, proj_lif: bool = True,
                      bias: bool = False):
        """A 1x1 conv (``bias``), BN and neuron for each name, then the output projection ``proj`` (1x1 conv
        with bias, BN and, where the official block has one, a neuron). Stateful: ``<name>_conv``,
        ``<name>_bn``, ``<name>_lif``; stateless: ``<name>`` (a ``ConvBN``) and ``<name>_lif``."""
        dims = 2 if conv is nn.Conv2d else 1
        for name, branch_bias, neuron in [(n, bias, True) for n in names] + [("proj", True, proj_lif)]:
            if self.stateless:
                setattr(self, name, ConvBN(dim, dim, dims=dims, bias=branch_bias))
            else:
                setattr(self, f"{name}_conv", conv(dim, dim, kernel_size=1, stride=1, bias=branch_bias))
                setattr(self, f"{name}_bn", bn(dim))
            if neuron:
                setattr(self, f"{name}_lif", self.neuron())

    def reset(self):
        """Back to rest for every neuron (SpikingJelly's reset_net)."""
        for module in self.modules():
            if isinstance(module, BaseNeuron):
                module.reset()

    def _finish_with_projection(self, dim: int, stateless: bool) -> None:
        """The output projection Conv1d-BN-LIF (registered last: the official parameter order), then
        ``stateless``: every neuron wrapped to start from rest at each call (bipolar and experts blocks)."""
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = self.neuron()
        if stateless:
            self.stateless = True
            make_stateless(self)

    def conv_bn(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """BN(Conv(x)) of branch ``name`` on x [T, B, ...], the linear layers on [T*B, ...]."""
        branch = self._modules.get(name)
        if isinstance(branch, ConvBN):
            return branch(x)
        T, B = x.shape[:2]
        y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x.flatten(0, 1)))
        return y.reshape(T, B, *y.shape[1:])

    def conv_bn_neuron(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """SN(BN(Conv(x))) of branch ``name``, the BatchNorm fused into the neuron (nn/batchnorm_fusion.py)."""
        neuron = getattr(self, f"{name}_lif")
        branch = self._modules.get(name)
        if isinstance(branch, ConvBN):
            return branch(x, neuron)
        T, B = x.shape[:2]
        y = getattr(self, f"{name}_conv")(x.flatten(0, 1))
        return batchnorm_then_neuron(getattr(self, f"{name}_bn"), neuron, y.view(T, B, *y.shape[1:]))

    _conv_bn_lif = conv_bn_neuron


class _HeadedAttention(SpikingBlock):
    def __init__(self, dim: int, num_heads: int, backend: str, stateless: bool):
        check_heads(dim, num_heads)
        super().__init__(backend, stateless)
        self.dim, self.num_heads = dim, num_heads

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}, backend={self.backend}"


# ---------------------------------------------------------------- QKFormer, Spikformer, SDT v1
class _QKAttention(_HeadedAttention):
    """QKFormer Q-K attention (``Token_QK_Attention`` in the official imagenet/qkformer.py)."""

    _op = None

    def __init__(self, dim: int, num_heads: int = 8, backend: str = "auto", *, stateless: bool = False):
        super().__init__(dim, num_heads, backend, stateless)
        self._add_branches(dim, ("q", "k"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, B, C, H, W] -> spikes [T, B, C, H, W]."""
        _check_input(x, self.dim)
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        q, k = self.conv_bn_neuron("q", x), self.conv_bn_neuron("k", x)
        x = type(self)._op(q, k, self.num_heads, backend=self.backend)
        return self.conv_bn_neuron("proj", x).reshape(T, B, C, H, W)


class TokenQKAttention(_QKAttention):
    """QKFormer Q-K token attention block: SN(BN(Conv(SN_0.5(sum_head-channels Q) * K)))."""

    _op = staticmethod(attention_ops.qk_token_attention)


class ChannelQKAttention(_QKAttention):
    """QKFormer Q-K channel attention block (paper only; same projections as the token version)."""

    _op = staticmethod(attention_ops.qk_channel_attention)


class SpikingSelfAttention(_HeadedAttention):
    """Spikformer SSA, ImageNet form (official imagenet/model.py ``SSA``; QKFormer stage 3):
    Q, K, V = SN(BN(Conv1x1(x))), out = SN(BN(Conv1x1(SN_0.5(Q K^T V * scale)))).
    ``scale`` 0.125 (0.25 for the DVS models).

    ``proj_lif_over_batch=True`` reproduces the official QKFormer code, whose ``proj_lif`` receives the
    flattened [T·B, C, N] tensor and therefore integrates across T·B "time steps" (sample b's first step
    starts from sample b-1's last membrane); the default runs it over T only, as the paper intends.
    ``qkv_bias=True`` gives Q/K/V a bias, as the CIFAR code's ``nn.Linear`` layers have.
    """

    def __init__(self, dim: int, num_heads: int = 8, scale: float = SSA_SCALE, backend: str = "auto", *,
                 stateless: bool = False, proj_lif_over_batch: bool = False, qkv_bias: bool = False):
        super().__init__(dim, num_heads, backend, stateless)
        check_finite("scale", scale)
        self.scale, self.proj_lif_over_batch = scale, proj_lif_over_batch
        self._add_branches(dim, ("q", "k", "v"), bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, B, C, H, W] -> spikes [T, B, C, H, W]."""
        _check_input(x, self.dim)
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        q, k, v = (self.conv_bn_neuron(name, x) for name in ("q", "k", "v"))
        y = self_attention_core(q, k, v, self.num_heads, self.scale, self.backend)
        if not self.proj_lif_over_batch:
            return self.conv_bn_neuron("proj", y).reshape(T, B, C, H, W)
        if self.stateless:
            # T*B steps of one sample: the same convolution and BatchNorm batch, the BatchNorm fused into proj_lif
            return self.conv_bn_neuron("proj", y.reshape(T * B, 1, C, H * W)).reshape(T, B, C, H, W)
        # a stateful proj_lif keeps its membrane as [C, N] between calls: the unfused path keeps that shape
        return self.proj_lif(self.conv_bn("proj", y).flatten(0, 1)).reshape(T, B, C, H, W)


class SpikeDrivenSelfAttention(_HeadedAttention):
    """Spike-driven Transformer v1 attention (official module/ms_conv.py ``MS_SSA_Conv``, non-DVS):
    xs = SN(x); Q, K, V = SN(BN2d(Conv1x1(xs))); out = x + BN2d(Conv1x1(Q * SN_0.5(sum_tokens K * V))).
    Returns the block output only (the official forward also returns V). ``form="paper"`` switches to
    SN(sum_tokens Q * K) * V."""

    def __init__(self, dim: int, num_heads: int = 8, form: str = "code", backend: str = "auto", *,
                 stateless: bool = False):
        super().__init__(dim, num_heads, backend, stateless)
        if form not in ("code", "paper"):
            raise ValueError(f"form: expected 'code' or 'paper', got {form!r}")
        self.form = form
        self.shortcut_lif = self.neuron()
        self._add_branches(dim, ("q", "k", "v"), conv=nn.Conv2d, bn=nn.BatchNorm2d, proj_lif=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: real-valued [T, B, C, H, W] -> [T, B, C, H, W] (membrane shortcut: x + attention)."""
        _check_input(x, self.dim)
        T, B, C, H, W = x.shape
        spikes = self.shortcut_lif(x)
        q, k, v = (self.conv_bn_neuron(name, spikes).flatten(3) for name in ("q", "k", "v"))
        y = attention_ops.spike_driven_attention(q, k, v, self.num_heads, form=self.form, backend=self.backend)
        return x + self.conv_bn("proj", y.reshape(T, B, C, H, W))

    def extra_repr(self):
        return super().extra_repr() + f", form={self.form}"


# ---------------------------------------------------------------- bipolar self-attention
class BipolarSelfAttention(SpikingBlock):
    """x [T, B, C, H, W] -> spikes [T, B, C, H, W]:
    Q, K = BipolarLIF(BN(Conv1x1(x))), V = LIF(BN(Conv1x1(x))),
    out = LIF(BN(Conv1x1(SN_0.5(Shiftmax(scale * Q K^T) V)))) per head.

    norm: "shiftmax" (default), "softmax" (the ablation) or "none"; scale 1.0 keeps the scores
    integers, so Shiftmax's numerator is an exact shift. ``qk_threshold`` is the bipolar neurons' θ.
    """

    def __init__(self, dim: int, num_heads: int = 8, scale: float = 1.0, norm: str = "shiftmax",
                 pow2_denominator: bool = True, qk_threshold: float = 1.0, attention_threshold: float = 0.5,
                 backend: str = "auto", *, stateless: bool = False):
        check_heads(dim, num_heads)
        check_finite("scale", scale)
        check_finite("attention_threshold", attention_threshold)
        if norm not in NORM_CODES:
            raise ValueError(f"norm: expected one of {tuple(NORM_CODES)}, got {norm!r}")
        super().__init__(backend)
        self.dim, self.num_heads, self.scale, self.norm = dim, num_heads, scale, norm
        self.pow2_denominator, self.attention_threshold = pow2_denominator, attention_threshold
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
        self.q_lif = BipolarLIF(tau=2.0, v_threshold=qk_threshold, detach_reset=True, step_mode="m", backend=backend)
        self.k_lif = BipolarLIF(tau=2.0, v_threshold=qk_threshold, detach_reset=True, step_mode="m", backend=backend)
        self.v_lif = self.neuron()
        self._finish_with_projection(dim, stateless)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.dim)
        T, B, C, H, W = x.shape
        h, d = self.num_heads, C // self.num_heads
        x = x.flatten(3)
        # [T, B, C, N] -> [T, B, h, N, d]: head g owns channels [g*d, (g+1)*d).
        q, k, v = (self.conv_bn_neuron(name, x).reshape(T, B, h, d, H * W).transpose(-1, -2)
                   for name in ("q", "k", "v"))
        y = bipolar_attention(q, k, v, self.scale, self.norm, pow2_denominator=self.pow2_denominator,
                              v_threshold=self.attention_threshold, check_ternary=False, backend=self.backend)
        y = y.transpose(-1, -2).reshape(T, B, C, H * W)
        return self.conv_bn_neuron("proj", y).reshape(T, B, C, H, W)

    def extra_repr(self):
        return (f"dim={self.dim}, num_heads={self.num_heads}, scale={self.scale}, norm={self.norm}, "
                f"pow2_denominator={self.pow2_denominator}, backend={self.backend}")


# ---------------------------------------------------------------- experts mixture (SEMM)
class EMSA(SpikingBlock):
    """Experts-mixture spiking attention, x [T, B, C, H, W] -> spikes [T, B, C, H, W]:
    K = SN(BN(Lin(x))) [.., d_e], V = SN(BN(Lin(x))) [.., C], router R = SN(BN(Lin_R(x))) [.., m],
    per expert Q_i = SN(BN(Lin_i(x))) [.., d_e] and A_i = SN((Q_i K^T) V * scale),
    Y = sum_i R_i * A_i (fused, skipping zero router spikes), out = SN(BN(Lin(Y))).
    Port defaults (STEP's port of SEMM): m = 4 experts, d_e = 96, scale = 0.125; the port's Linear layers
    are the equivalent 1x1 convolutions on [T*B, C, N]."""

    def __init__(self, dim: int, num_experts: int = 4, expert_dim: int = 96, scale: float = 0.125,
                 backend: str = "auto", *, stateless: bool = False):
        dim = positive_int("dim", dim)
        positive_int("num_experts", num_experts)
        positive_int("expert_dim", expert_dim)
        check_finite("scale", scale)
        super().__init__(backend)
        self.dim, self.num_experts, self.expert_dim, self.scale = dim, num_experts, expert_dim, scale
        widths = {"q": num_experts * expert_dim, "k": expert_dim, "v": dim, "router": num_experts}
        for name, width in widths.items():
            setattr(self, f"{name}_conv", nn.Conv1d(dim, width, kernel_size=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(width))
            setattr(self, f"{name}_lif", self.neuron())
        self.expert_lif = self.neuron()
        self._finish_with_projection(dim, stateless)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.dim)
        T, B, C, H, W = x.shape
        N, m, de = H * W, self.num_experts, self.expert_dim
        x = x.flatten(3)
        q = self.conv_bn_neuron("q", x).reshape(T, B, m, de, N).transpose(-1, -2)    # [T, B, m, N, d_e]
        k = self.conv_bn_neuron("k", x).transpose(-1, -2).unsqueeze(2)               # [T, B, 1, N, d_e]
        v = self.conv_bn_neuron("v", x).transpose(-1, -2).unsqueeze(2)               # [T, B, 1, N, C]
        router = self.conv_bn_neuron("router", x).transpose(-1, -2)                  # [T, B, N, m]
        # (Q_i K^T) V evaluated as Q_i (K^T V): identical, and K^T V is shared by the experts.
        experts = self.expert_lif((q @ (k.transpose(-1, -2) @ v)) * self.scale)       # [T, B, m, N, C]
        y = experts_mixture(router.contiguous(), experts.permute(0, 1, 3, 2, 4), backend=self.backend)
        return self.conv_bn_neuron("proj", y.transpose(-1, -2)).reshape(T, B, C, H, W)

    def extra_repr(self):
        return (f"dim={self.dim}, num_experts={self.num_experts}, expert_dim={self.expert_dim}, scale={self.scale}, "
                f"backend={self.backend}")


class EMSP(SpikingBlock):
    """Experts-mixture spiking MLP, x [T, B, C, H, W] -> spikes [T, B, C, H, W]:
    Z = SN(BN(Lin(x))) of width ``hidden_dim``, split into halves Z1, Z2; the channel-wise router
    G = SN(BN(DWConv3x3(Z1))); out = SN(BN(Lin(G * Z2))). Port: hidden_dim = 4C (CIFAR)."""

    def __init__(self, dim: int, hidden_dim: int | None = None, backend: str = "auto", *, stateless: bool = False):
        dim = positive_int("dim", dim)
        hidden_dim = 4 * dim if hidden_dim is None else positive_int("hidden_dim", hidden_dim)
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim: must be even (it is split into two halves), got {hidden_dim}")
        super().__init__(backend)
        self.dim, self.hidden_dim = dim, hidden_dim
        half = hidden_dim // 2
        self.fc1_conv = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.fc1_bn = nn.BatchNorm2d(hidden_dim)
        self.fc1_lif = self.neuron()
        self.gate_conv = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half)
        self.gate_bn = nn.BatchNorm2d(half)
        self.gate_lif = self.neuron()
        self.fc2_conv = nn.Conv2d(half, dim, kernel_size=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = self.neuron()
        if stateless:
            self.stateless = True
            make_stateless(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.dim)
        z_router, z_value = self.conv_bn_neuron("fc1", x).chunk(2, dim=2)
        gate = self.conv_bn_neuron("gate", z_router)
        return self.conv_bn_neuron("fc2", gate * z_value)

    def extra_repr(self):
        return f"dim={self.dim}, hidden_dim={self.hidden_dim}, backend={self.backend}"
