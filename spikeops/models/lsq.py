"""Learned step-size quantisation (LSQ, Esser et al. ICLR 2020) of weights, as QSD-Transformer uses it
(docs/models.md; official ``quan_w.py`` / ``_quan_base_plus.py``, "Method1").

Signed ``bits``-bit grid ``Qn = -2^(bits-1)``, ``Qp = 2^(bits-1) - 1``; one step ``alpha`` per output channel:

* forward: ``W_q = round(clamp(W / alpha, Qn, Qp)) · alpha`` (torch.round: half to even);
* backward (straight-through rounding): ``dW_q/dW = 1`` inside the clip range, 0 outside;
  ``dW_q/dalpha = round(W/alpha) - W/alpha`` inside, ``Qn`` / ``Qp`` below / above, and the step's
  gradient is scaled by ``g = 1 / sqrt(numel(W) · Qp)`` (a value-preserving detach trick);
* initialisation: every channel's step is ``2·mean|W| / sqrt(Qp)`` (the whole tensor's mean), set at the
  first forward in training mode (``init_state`` records it, so a loaded checkpoint is not re-initialised).
  The constructor sets the same value from the initial weights so that an untrained model is usable too.

Activations are not quantised: the official ``ActLSQ`` is the identity (its unused parameters are not
reproduced; ``official_lsq_keys_ignored`` names them for checkpoint loading).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["lsq_range", "lsq_quantize", "LSQQuantizer", "LSQConv1d", "LSQConv2d", "LSQLinear", "lsq_layers",
           "official_lsq_keys_ignored"]

MAX_BITS = 16


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= MAX_BITS:
        raise ValueError(f"bits: expected an int in 2..{MAX_BITS} (signed weights need at least 2), got {bits!r}")
    return bits


def lsq_range(bits: int) -> tuple[int, int]:
    """(Qn, Qp) of the signed ``bits``-bit grid."""
    bits = _check_bits(bits)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in value; ``scale · grad`` in backward."""
    scaled = x * scale
    return (x - scaled).detach() + scaled


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def lsq_quantize(weight: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` [out, ...] fake-quantised with per-output-channel steps ``alpha`` [out] (see module doc)."""
    Qn, Qp = lsq_range(bits)
    if alpha.dim() != 1 or alpha.shape[0] not in (1, weight.shape[0]):
        raise ValueError(f"alpha: expected one step per output channel ({weight.shape[0]}) or a single one, got "
                         f"shape {tuple(alpha.shape)}")
    step = _scale_gradient(alpha, 1.0 / math.sqrt(weight.numel() * Qp))
    step = step.view((-1,) + (1,) * (weight.dim() - 1))
    return _round_ste(torch.clamp(weight / step, Qn, Qp)) * step


class LSQQuantizer(nn.Module):
    """The learnable per-channel step of one weight tensor; ``forward(weight)`` returns its fake-quantised value."""

    def __init__(self, out_channels: int, bits: int = 4):
        super().__init__()
        self.bits = _check_bits(bits)
        self.alpha = nn.Parameter(torch.ones(out_channels))
        self.register_buffer("init_state", torch.zeros(1))
        # A Python mirror of init_state: reading the buffer in forward would be a data-dependent branch
        # (a graph break under torch.compile on every layer).
        self._initialised = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialised = bool(self.init_state.detach().cpu().item())

    @torch.no_grad()
    def initialise(self, weight: torch.Tensor) -> None:
        """Every step to ``2·mean|W| / sqrt(Qp)`` (the official first-training-step initialisation)."""
        _, Qp = lsq_range(self.bits)
        self.alpha.copy_((2 * weight.detach().abs().mean() / math.sqrt(Qp)).expand_as(self.alpha))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training and not self._initialised:
            self.initialise(weight)
            self.init_state.fill_(1)
            self._initialised = True
        return lsq_quantize(weight, self.alpha, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.alpha.numel()}"


class _LSQWeight:
    """Mixin for torch's conv / linear layers (first base): the weight goes through an LSQQuantizer on every
    forward. Takes the layer's own arguments plus ``bits``."""

    def __init__(self, *args, bits: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self.quantizer = LSQQuantizer(self.weight.shape[0], bits)
        if self.weight.device.type != "meta":
            self.quantizer.initialise(self.weight)

    def quantized_weight(self) -> torch.Tensor:
        return self.quantizer(self.weight)


class _LSQConv(_LSQWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class LSQConv2d(_LSQConv, nn.Conv2d):
    pass


class LSQConv1d(_LSQConv, nn.Conv1d):
    pass


class LSQLinear(_LSQWeight, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def lsq_layers(model: nn.Module) -> list[nn.Module]:
    """Every LSQ-quantised conv / linear layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, _LSQWeight)]


def official_lsq_keys_ignored(key: str) -> bool:
    """True for the official checkpoints' ``ActLSQ`` entries (an identity whose parameters are never used)."""
    return ".act." in key
