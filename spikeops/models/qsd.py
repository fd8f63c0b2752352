"""QSD-Transformer (Quantized Spike-driven Transformer, ICLR 2025) on spikeops (docs/models.md).

The Meta-SpikeFormer of ``sdt_v2`` with, as in the official code (bollossom/QSD-Transformer @cd7338338e,
``classification/models.py``):

* IE-LIF everywhere: QSD's stateless ``Multispike``, ``clamp(round_half_up(D·x), 0, D) / D`` with a
  straight-through gradient (``spikeops.IELIF(D, v_threshold=1/D, stateless=True, norm=D)``; exact for any
  power-of-two ``D``, the official code has D = 4); the attention neuron ``Multispike_att`` divides by
  ``D/2`` instead (range [0, 2]). ``mprf=True`` adds the paper's MPRF (a learnable ``a·U + b``, our
  reading; not in the official code) to every attention neuron.
* Q-SDSA: ``Y = IE_att(Q (Kᵀ V) · 0.25)`` (plain matmuls of multi-bit spikes, then the fused neuron).
* ``bits``-bit LSQ weights on every conv and linear layer, first conv and head included (``spikeops.models.lsq``);
  BatchNorm stays in float.
* layer-scale (init 1e-6) on both residual branches of every transformer block.

Definition differences from the official code: spikeops' straight-through window includes both ends
(``0 <= x <= 1``; official ``0 < x < 1``), which only matters for inputs exactly on a bound; the official
``ActLSQ`` identity modules and their unused parameters are left out (``load_official_state_dict`` skips them).

Fine-grained distillation (FGD, paper only; our reading, docs/models.md): ``AttentionMapRecorder`` collects,
through forward hooks on the Q and K neurons of every attention block, the per-head token similarity
``M = Q Kᵀ`` (averaged over T); ``fgd_loss`` compares row-normalised student and teacher maps,
``1/(L·H) Σ_l Σ_h ‖N(M^S) − N(M^T)‖₂``; the training loss is ``L_CE + FGD_WEIGHT · L_FGD`` (λ = 2).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.multibit import IELIF
from ..ops.multibit import check_levels as _check_levels
from .keymap import load_mapped_state_dict, rename_keys
from .layers import check_backend
from .lsq import LSQConv1d, LSQConv2d, LSQLinear, _check_bits, lsq_layers, official_lsq_keys_ignored
from .sdt_v2 import SDT_V2_CONFIGS, MetaFormerParts, MetaSpikeFormer, MSAttention

__all__ = ["QSDParts", "QuantizedAttentionCore", "qsd_sdt_v2_t", "qsd_sdt_v2_m", "qsd_sdt_v2_l", "qsd_transformer",
           "AttentionMapRecorder", "fgd_loss", "FGD_WEIGHT", "QSD_ATTENTION_SCALE", "official_key_map",
           "load_official_state_dict"]

QSD_ATTENTION_SCALE = 0.25
LAYER_SCALE_INIT = 1e-6
FGD_WEIGHT = 2.0


def integer_neuron(D: int, backend: str, norm: float | None = None, mprf: bool = False) -> IELIF:
    """QSD's ``Multispike`` for D levels (``norm=D/2``: its attention variant) as a stateless IE-LIF."""
    return IELIF(D, v_threshold=1.0 / D, stateless=True, norm=float(D) if norm is None else norm, mprf=mprf,
                 step_mode="m", backend=check_backend(backend))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[T, B, C, *tokens] -> [T, B, h, N, d]; head g owns channels [g·d, (g+1)·d)."""
    T, B, C = x.shape[:3]
    return x.reshape(T, B, num_heads, C // num_heads, -1).transpose(-1, -2)


class QuantizedAttentionCore(nn.Module):
    """Q-SDSA core: ``IE_att(Q (Kᵀ V) · scale)`` per head over multi-bit spikes [T, B, C, N]."""

    def __init__(self, num_heads: int, D: int, backend: str, scale: float = QSD_ATTENTION_SCALE, mprf: bool = False):
        super().__init__()
        self.num_heads, self.scale = num_heads, scale
        self.attn_lif = integer_neuron(D, backend, norm=D / 2, mprf=mprf)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T, B, C, N = q.shape
        q, k, v = (_split_heads(x, self.num_heads) for x in (q, k, v))
        y = (q @ (k.transpose(-1, -2) @ v)) * self.scale
        return self.attn_lif(y.transpose(-1, -2).reshape(T, B, C, N))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}"


class QSDParts(MetaFormerParts):
    """IE-LIF neurons with ``D`` levels, ``bits``-bit LSQ conv/linear layers, layer-scale 1e-6, optional MPRF."""

    layer_scale_init = LAYER_SCALE_INIT

    def __init__(self, bits: int = 4, D: int = 4, mprf: bool = False):
        self.bits, self.D, self.mprf = _check_bits(bits), _check_levels(D), bool(mprf)

    def neuron(self, backend: str) -> nn.Module:
        return integer_neuron(self.D, backend)

    def conv2d(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, groups=1, bias=True):
        return LSQConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias=bias, bits=self.bits)

    def conv1d(self, in_channels, out_channels):
        return LSQConv1d(in_channels, out_channels, kernel_size=1, bits=self.bits)

    def linear(self, in_features, out_features):
        return LSQLinear(in_features, out_features, bits=self.bits)

    def attention_core(self, num_heads: int, backend: str) -> nn.Module:
        return QuantizedAttentionCore(num_heads, self.D, backend, mprf=self.mprf)


def qsd_transformer(*, bits: int = 4, D: int = 4, mprf: bool = False, T: int = 1, num_classes: int = 1000,
                    img_size: int | None = None, backend: str = "auto", **kwargs) -> MetaSpikeFormer:
    """A QSD-Transformer of any Meta-SpikeFormer shape (``embed_dims``, ``depths``, ``num_heads``, ...)."""
    model = MetaSpikeFormer(T=T, num_classes=num_classes, img_size=img_size, backend=backend,
                            parts=QSDParts(bits=bits, D=D, mprf=mprf), **kwargs)
    for layer in lsq_layers(model):  # the head was re-initialised after its quantizer was built
        if layer.weight.device.type != "meta":
            layer.quantizer.initialise(layer.weight)
    return model


def _qsd(size, **kwargs):
    embed_dims, depths = SDT_V2_CONFIGS[size]
    kwargs.setdefault("embed_dims", embed_dims)
    kwargs.setdefault("depths", depths)
    return qsd_transformer(**kwargs)


def qsd_sdt_v2_t(*, bits: int = 4, D: int = 4, T: int = 1, num_classes: int = 1000,
                 img_size: int | None = None, backend: str = "auto", **kwargs) -> MetaSpikeFormer:
    """QSD-Transformer on ``sdt_v2_t`` (official default ``spikformer_8_15M_CAFormer``)."""
    return _qsd("t", bits=bits, D=D, T=T, num_classes=num_classes, img_size=img_size, backend=backend, **kwargs)


def qsd_sdt_v2_m(*, bits: int = 4, D: int = 4, T: int = 1, num_classes: int = 1000,
                 img_size: int | None = None, backend: str = "auto", **kwargs) -> MetaSpikeFormer:
    """QSD-Transformer on ``sdt_v2_m`` (official ``spikformer_8_384_CAFormer``)."""
    return _qsd("m", bits=bits, D=D, T=T, num_classes=num_classes, img_size=img_size, backend=backend, **kwargs)


def qsd_sdt_v2_l(*, bits: int = 4, D: int = 4, T: int = 1, num_classes: int = 1000,
                 img_size: int | None = None, backend: str = "auto", **kwargs) -> MetaSpikeFormer:
    """QSD-Transformer on ``sdt_v2_l`` (official ``spikformer_8_512_CAFormer``)."""
    return _qsd("l", bits=bits, D=D, T=T, num_classes=num_classes, img_size=img_size, backend=backend, **kwargs)


# ---------------------------------------------------------------- official checkpoints
_RULES = [(r"\.(alpha|init_state)$", r".quantizer.\1")]


def official_key_map(keys) -> dict[str, str]:
    """{official key: spikeops key}: module names are the official ones; each LSQ layer's ``alpha`` and
    ``init_state`` live in its ``quantizer``."""
    return rename_keys(keys, _RULES)


def load_official_state_dict(model: MetaSpikeFormer, state_dict, strict: bool = True):
    """Loads an official QSD-Transformer checkpoint (its unused ``ActLSQ`` entries are skipped)."""
    return load_mapped_state_dict(model, state_dict, official_key_map, strict=strict,
                                  ignore=official_lsq_keys_ignored)


# ---------------------------------------------------------------- fine-grained distillation
def _token_similarity(q: torch.Tensor, k: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Q, K spikes [T, B, C, H, W] -> per-head token similarity ``Q Kᵀ`` averaged over T, [B, h, N, N]."""
    return (_split_heads(q, num_heads) @ _split_heads(k, num_heads).transpose(-1, -2)).mean(0)


class AttentionMapRecorder:
    """Context manager collecting every Meta-SpikeFormer attention block's per-head similarity map through
    forward hooks on its Q and K neurons (no change to the model). ``maps`` lists [B, h, N, N] tensors in
    block order, attached to the autograd graph (so a loss on them trains the model).

        with AttentionMapRecorder(student) as rec:
            logits = student(x)
        loss = ce + FGD_WEIGHT * fgd_loss(rec.maps, teacher_maps)
    """

    def __init__(self, model: nn.Module):
        self.blocks = [m for m in model.modules() if isinstance(m, MSAttention)]
        if not self.blocks:
            raise ValueError(f"model: expected a Meta-SpikeFormer with attention blocks, found none in "
                             f"{type(model).__name__}")
        self._handles = []
        self._q, self._k = {}, {}

    def _hook(self, store, index):
        def hook(module, inputs, output):
            store[index] = output
        return hook

    def __enter__(self):
        self._q.clear(), self._k.clear()
        for i, block in enumerate(self.blocks):
            self._handles.append(block.q_lif.register_forward_hook(self._hook(self._q, i)))
            self._handles.append(block.k_lif.register_forward_hook(self._hook(self._k, i)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    @property
    def maps(self) -> list[torch.Tensor]:
        missing = [i for i in range(len(self.blocks)) if i not in self._q or i not in self._k]
        if missing:
            raise RuntimeError(f"maps: attention blocks {missing} did not run inside the recorder's `with` block")
        return [_token_similarity(self._q[i], self._k[i], block.num_heads) for i, block in enumerate(self.blocks)]


def _row_normalised(m: torch.Tensor, eps: float) -> torch.Tensor:
    return m / m.norm(dim=-1, keepdim=True).clamp_min(eps)


def fgd_loss(student_maps, teacher_maps, eps: float = 1e-12) -> torch.Tensor:
    """Fine-grained distillation loss: the mean over layers, heads (and batch) of the L2 (Frobenius) distance
    between row-normalised student and teacher maps [B, h, N, M]. The teacher side is detached."""
    student_maps, teacher_maps = list(student_maps), list(teacher_maps)
    if not student_maps or len(student_maps) != len(teacher_maps):
        raise ValueError(f"teacher_maps: expected one map per student map ({len(student_maps)}), got "
                         f"{len(teacher_maps)}")
    losses = []
    for layer, (s, t) in enumerate(zip(student_maps, teacher_maps)):
        if s.dim() != 4 or s.shape != t.shape:
            raise ValueError(f"teacher_maps: layer {layer} expected a map of the student's shape [B, h, N, M] "
                             f"{tuple(s.shape)}, got {tuple(t.shape)}")
        diff = _row_normalised(s, eps) - _row_normalised(t.detach().to(s.dtype), eps)
        losses.append(diff.flatten(2).norm(dim=-1).mean())
    return torch.stack(losses).mean()
