"""Spiking-attention blocks with the projections, BatchNorm and LIF neurons of the official models, the
attention itself running on the fused operators of spikeops.ops.attention.

Parameter and sub-module names follow the official code (``q_conv``, ``q_bn``, ``q_lif``, ...), so
official checkpoints load with ``load_state_dict``. Neurons are spikeops.LIF in multi-step mode with
the official hyper-parameters (tau=2, detached hard reset to 0, threshold 1; attention neuron
threshold 0.5); like SpikingJelly's, their membranes persist across calls until ``reset()``. The
attention neuron is part of the fused operator and starts from rest at every call.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention_bipolar import check_finite
from .neurons import LIF
from .ops import attention as ops

__all__ = ["TokenQKAttention", "ChannelQKAttention", "SpikingSelfAttention", "SpikeDrivenSelfAttention"]


def _lif(backend: str, v_threshold: float = 1.0) -> LIF:
    return LIF(tau=2.0, v_threshold=v_threshold, detach_reset=True, step_mode="m", backend=backend)


def _check_dim(dim: int, num_heads: int) -> None:
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    if dim % num_heads != 0:
        raise ValueError(f"num_heads: must divide dim={dim}, got num_heads={num_heads}")


def _check_input(x: torch.Tensor, dim: int) -> None:
    if x.dim() != 5 or x.shape[2] != dim:
        raise ValueError(f"x: expected [T, B, C={dim}, H, W], got shape {tuple(x.shape)}")


class _SpikingAttentionBase(nn.Module):
    def __init__(self, dim: int, num_heads: int, backend: str):
        super().__init__()
        _check_dim(dim, num_heads)
        self.dim, self.num_heads, self.backend = dim, num_heads, backend

    def _add_branches(self, names, conv=nn.Conv1d, bn=nn.BatchNorm1d, proj_lif: bool = True):
        """<name>_conv (1x1, no bias), <name>_bn, <name>_lif for each name, then the output projection
        proj_conv (1x1 with bias), proj_bn and, where the official block has one, proj_lif."""
        for name in names:
            setattr(self, f"{name}_conv", conv(self.dim, self.dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", bn(self.dim))
            setattr(self, f"{name}_lif", _lif(self.backend))
        self.proj_conv = conv(self.dim, self.dim, kernel_size=1, stride=1)
        self.proj_bn = bn(self.dim)
        if proj_lif:
            self.proj_lif = _lif(self.backend)

    def reset(self):
        """Back to rest for every neuron (SpikingJelly's reset_net)."""
        for module in self.modules():
            if isinstance(module, LIF):
                module.reset()

    def _conv_bn_lif(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """SN(BN(Conv(x))) with the linear layers on [T*B, ...], as the official code does."""
        T, B = x.shape[:2]
        y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x.flatten(0, 1)))
        return getattr(self, f"{name}_lif")(y.reshape(T, B, *y.shape[1:]))

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}, backend={self.backend}"


class _QKAttention(_SpikingAttentionBase):
    """QKFormer Q-K attention (``Token_QK_Attention`` in the official imagenet/qkformer.py)."""

    _op = None

    def __init__(self, dim: int, num_heads: int = 8, backend: str = "auto"):
        super().__init__(dim, num_heads, backend)
        self._add_branches(("q", "k"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, B, C, H, W] -> spikes [T, B, C, H, W]."""
        _check_input(x, self.dim)
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        q, k = self._conv_bn_lif("q", x), self._conv_bn_lif("k", x)
        x = type(self)._op(q, k, self.num_heads, backend=self.backend)
        return self._conv_bn_lif("proj", x).reshape(T, B, C, H, W)


class TokenQKAttention(_QKAttention):
    """QKFormer Q-K token attention block: SN(BN(Conv(SN_0.5(sum_head-channels Q) * K)))."""

    _op = staticmethod(ops.qk_token_attention)


class ChannelQKAttention(_QKAttention):
    """QKFormer Q-K channel attention block (paper only; same projections as the token version)."""

    _op = staticmethod(ops.qk_channel_attention)


class SpikingSelfAttention(_SpikingAttentionBase):
    """Spikformer SSA, ImageNet form (official imagenet/model.py ``SSA``; QKFormer stage 3):
    Q, K, V = SN(BN(Conv1x1(x))), out = SN(BN(Conv1x1(SN_0.5(Q K^T V * scale)))).
    ``scale`` 0.125 (0.25 for the DVS models)."""

    def __init__(self, dim: int, num_heads: int = 8, scale: float = 0.125, backend: str = "auto"):
        super().__init__(dim, num_heads, backend)
        check_finite("scale", scale)
        self.scale = scale
        self._add_branches(("q", "k", "v"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, B, C, H, W] -> spikes [T, B, C, H, W]."""
        _check_input(x, self.dim)
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        q, k, v = (self._conv_bn_lif(name, x) for name in ("q", "k", "v"))
        x = ops.spiking_self_attention(q, k, v, self.num_heads, scale=self.scale, spike_operands=True,
                                       backend=self.backend)
        return self._conv_bn_lif("proj", x).reshape(T, B, C, H, W)


class SpikeDrivenSelfAttention(_SpikingAttentionBase):
    """Spike-driven Transformer v1 attention (official module/ms_conv.py ``MS_SSA_Conv``, non-DVS):
    xs = SN(x); Q, K, V = SN(BN2d(Conv1x1(xs))); out = x + BN2d(Conv1x1(Q * SN_0.5(sum_tokens K * V))).
    Returns the block output only (the official forward also returns V). ``form="paper"`` switches to
    SN(sum_tokens Q * K) * V."""

    def __init__(self, dim: int, num_heads: int = 8, form: str = "code", backend: str = "auto"):
        super().__init__(dim, num_heads, backend)
        if form not in ("code", "paper"):
            raise ValueError(f"form: expected 'code' or 'paper', got {form!r}")
        self.form = form
        self.shortcut_lif = _lif(backend)
        self._add_branches(("q", "k", "v"), conv=nn.Conv2d, bn=nn.BatchNorm2d, proj_lif=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: real-valued [T, B, C, H, W] -> [T, B, C, H, W] (membrane shortcut: x + attention)."""
        _check_input(x, self.dim)
        T, B, C, H, W = x.shape
        spikes = self.shortcut_lif(x)
        q, k, v = (self._conv_bn_lif(name, spikes).flatten(3) for name in ("q", "k", "v"))
        y = ops.spike_driven_attention(q, k, v, self.num_heads, form=self.form, backend=self.backend)
        y = self.proj_bn(self.proj_conv(y.reshape(T * B, C, H, W)))
        return x + y.reshape(T, B, C, H, W)

    def extra_repr(self):
        return super().extra_repr() + f", form={self.form}"
