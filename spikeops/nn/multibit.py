"""Multi-bit and signed spiking neurons on the fused multi-step kernels (docs/neurons.md).

* IE-LIF (integer-emitting LIF; QSD-Transformer, SDT-v3, STEP's I-LIF): charge as LIF,
  ``S = clamp(round(H / θ), 0, D)``, soft reset ``V = H − S·θ``, straight-through gradient ``1/θ``
  inside ``[0, D·θ]`` (both ends included). ``rounding`` is ``"half_up"`` (QSD: ``floor(y + 0.5)``)
  or ``"half_even"`` (SDT-v3 / SpikingJelly: ``torch.round``).
* Multispike: the stateless IE-LIF of QSD and SDT-v3 (every step on its own, ``H = X``), with the
  output divided by ``norm`` (``D`` for their ``/D`` normalisation, ``D/2`` for QSD's attention
  neuron whose range is ``[0, 2]``).
* Bipolar (ternary) LIF: ``+1`` when ``H ≥ θ``, ``−1`` when ``H ≤ −θ``, else 0; soft or hard reset;
  surrogate gradient evaluated at ``|H| − θ``.
* ``expand_to_binary`` / ``collapse_to_integer``: integer spikes ``[T, *]`` <-> binary spikes over
  ``D`` virtual steps ``[T·D, *]``, so an IE-LIF model runs spike-driven at inference.
* MPRF: a learnable per-layer affine ``a·U + b`` on the neuron's input, and ``fold_mprf`` to fold it
  into the preceding Linear/Conv layer.

The functional forms (``ielif``, ``multispike``, ``bipolar_lif``) and the spike conversions live in
``spikeops.ops.multibit``; the modules here run through them, that is through
``spikeops.ops.neuron.op.neuron_multi_step`` (one launch forward, one backward, on every backend);
backward keeps the spikes as int8 (bipolar −1..1, integer 0..D, hence D ≤ 127). Output dtype is the
input dtype.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..ops.multibit import bipolar_config, check_levels, check_norm, integer_config, multispike, normalise
from .neurons import BaseNeuron, check_backend

__all__ = ["IELIF", "Multispike", "BipolarLIF", "MPRF", "fold_mprf"]


# ---------------------------------------------------------------- MPRF
class MPRF(nn.Module):
    """Membrane-potential rectify function (QSD-Transformer; our reading, docs/models.md): ``U' = a·U + b`` on the
    neuron's input, with learnable ``a`` (init 1) and ``b`` (init 0). ``num_channels=None`` gives
    one pair per layer; an int gives one pair per channel along ``channel_dim``.
    Being affine, it folds into the preceding layer at inference: see ``fold_mprf``."""

    def __init__(self, num_channels: int | None = None, channel_dim: int = -1):
        super().__init__()
        if num_channels is not None and (isinstance(num_channels, bool) or not isinstance(num_channels, int)
                                         or num_channels < 1):
            raise ValueError(f"num_channels: expected None or a positive int, got {num_channels!r}")
        shape = () if num_channels is None else (num_channels,)
        self.num_channels, self.channel_dim = num_channels, channel_dim
        self.a = nn.Parameter(torch.ones(shape))
        self.b = nn.Parameter(torch.zeros(shape))

    def _along_channels(self, p, u):
        if self.num_channels is None:
            return p
        dim = self.channel_dim % u.dim()
        if u.shape[dim] != self.num_channels:
            raise ValueError(f"x: expected {self.num_channels} channels along dim {self.channel_dim}, "
                             f"got shape {tuple(u.shape)}")
        return p.view((-1,) + (1,) * (u.dim() - dim - 1))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u * self._along_channels(self.a, u).to(u.dtype) + self._along_channels(self.b, u).to(u.dtype)

    def extra_repr(self):
        return f"num_channels={self.num_channels}, channel_dim={self.channel_dim}"


_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def fold_mprf(layer: nn.Module, mprf: MPRF) -> nn.Module:
    """A copy of ``layer`` (Linear or Conv, producing U) with ``mprf`` folded in:
    ``W' = a·W`` per output channel and ``bias' = a·bias + b``. Then ``layer'(x) == mprf(layer(x))``
    up to float rounding (exactly when the values involved are dyadic, e.g. quantized weights and
    integer spikes). For a per-channel MPRF, its channels must be the layer's output channels."""
    if not isinstance(layer, _FOLDABLE):
        raise TypeError(f"layer: expected one of {[c.__name__ for c in _FOLDABLE]}, got {type(layer).__name__}")
    if not isinstance(mprf, MPRF):
        raise TypeError(f"mprf: expected an MPRF module, got {type(mprf).__name__}")
    out_channels = layer.weight.shape[0]
    if mprf.num_channels not in (None, out_channels):
        raise ValueError(f"mprf: has {mprf.num_channels} channels but layer has {out_channels} output channels")
    a = mprf.a.detach().to(layer.weight.dtype).expand(out_channels)
    b = mprf.b.detach().to(layer.weight.dtype).expand(out_channels)
    folded = copy.deepcopy(layer)
    folded.weight.mul_(a.view((-1,) + (1,) * (layer.weight.dim() - 1)))
    bias = layer.bias.detach() * a + b if layer.bias is not None else b.clone()
    folded.bias = nn.Parameter(bias)
    return folded


# ---------------------------------------------------------------- modules
class IELIF(BaseNeuron):
    """Integer-emitting LIF (docs/neurons.md): multi-bit spikes 0..D, soft reset, straight-through gradient.

    ``stateless=True`` treats every step on its own with ``H = X`` (QSD / SDT-v3 Multispike; with
    ``v_threshold=1/D, norm=D`` it is QSD's ``Multispike``, ``norm=D/2`` its attention variant).
    ``norm`` divides the output (None: integer spikes). ``mprf=True`` adds a learnable ``a·X + b``
    on the input (``fold_mprf_into`` moves it into the preceding layer for inference).
    """

    def __init__(self, D: int = 4, tau: float | None = 2.0, v_threshold: float = 1.0, decay_input: bool = True,
                 rounding: str = "half_up", stateless: bool = False, norm: float | None = None, mprf: bool = False,
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto", store_v_seq: bool = False):
        self.D, self.tau, self.decay_input, self.rounding = D, tau, decay_input, rounding
        self.stateless = bool(stateless)
        self.norm = check_norm(norm)
        if self.stateless and store_v_seq:
            raise ValueError("store_v_seq: a stateless IELIF keeps no membrane; use stateless=False to record it")
        super().__init__(v_threshold, None, None, detach_reset, step_mode, backend, store_v_seq)
        self.mprf = MPRF() if mprf else None

    fuses_batchnorm = False  # its MPRF, stateless mode and norm sit between a BatchNorm and the neuron

    def _neuron_config(self):
        return integer_config(self.D, tau=self.tau, decay_input=self.decay_input, v_threshold=self.v_threshold,
                               detach_reset=self.detach_reset, rounding=self.rounding)

    def _run(self, x_seq, batchnorm=None):  # batchnorm stays None: fuses_batchnorm is False
        if self.mprf is not None:
            x_seq = self.mprf(x_seq)
        if self.stateless:
            return multispike(x_seq, self.D, v_threshold=self.v_threshold, norm=self.norm, rounding=self.rounding,
                              backend=self.backend), None
        spikes, v_seq = super()._run(x_seq)
        return normalise(spikes, self.norm), v_seq

    def fold_mprf_into(self, layer: nn.Module) -> nn.Module:
        """Returns ``layer`` with this neuron's MPRF folded in and removes the MPRF from the neuron."""
        if self.mprf is None:
            raise ValueError("mprf: this IELIF has no MPRF to fold (construct it with mprf=True)")
        folded = fold_mprf(layer, self.mprf)
        self.mprf = None
        return folded

    def extra_repr(self):
        return (f"D={self.D}, tau={self.tau}, decay_input={self.decay_input}, rounding={self.rounding}, "
                f"stateless={self.stateless}, norm={self.norm}, v_threshold={self.v_threshold}, "
                f"detach_reset={self.detach_reset}, step_mode={self.step_mode}, backend={self.backend}")


class Multispike(nn.Module):
    """Stateless multi-bit spike activation of QSD-Transformer / SDT-v3 as a module (see ``multispike``).
    Defaults are QSD's ``Multispike``; ``norm=2`` gives ``Multispike_att``."""

    def __init__(self, D: int = 4, v_threshold: float = 0.25, norm: float | None = 4.0, rounding: str = "half_up",
                 backend: str = "auto"):
        super().__init__()
        self.D, self.v_threshold, self.rounding = check_levels(D), v_threshold, rounding
        self.backend = check_backend(backend)
        self.norm = check_norm(norm)
        integer_config(D, tau=None, decay_input=True, v_threshold=v_threshold, detach_reset=True, rounding=rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return multispike(x, self.D, v_threshold=self.v_threshold, norm=self.norm, rounding=self.rounding,
                          backend=self.backend)

    def extra_repr(self):
        return f"D={self.D}, v_threshold={self.v_threshold}, norm={self.norm}, rounding={self.rounding}"


class BipolarLIF(BaseNeuron):
    """Bipolar (ternary) LIF with LIF's arguments and defaults: spikes in {−1, 0, +1} (docs/neurons.md).
    ``tau=None`` gives the bipolar IF neuron."""

    def __init__(self, tau: float | None = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function=None, detach_reset: bool = False,
                 step_mode: str = "s", backend: str = "auto", store_v_seq: bool = False):
        self.tau, self.decay_input = tau, decay_input
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq)

    def _neuron_config(self):
        return bipolar_config(tau=self.tau, decay_input=self.decay_input, v_threshold=self.v_threshold,
                               v_reset=self.v_reset, detach_reset=self.detach_reset,
                               surrogate_function=self.surrogate_function)

    def extra_repr(self):
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()
