"""Functional forms of the multi-bit and signed spiking neurons on the fused neuron operator
(``spikeops.ops.neuron.op.neuron_multi_step``), and the integer <-> binary spike conversions.

* ``ielif``: integer-emitting LIF (QSD-Transformer, SDT-v3, STEP's I-LIF): charge as LIF,
  ``S = clamp(round(H / θ), 0, D)``, soft reset ``V = H − S·θ``, straight-through gradient ``1/θ``
  inside ``[0, D·θ]`` (both ends included). ``rounding`` is ``"half_up"`` (QSD: ``floor(y + 0.5)``)
  or ``"half_even"`` (SDT-v3 / SpikingJelly: ``torch.round``).
* ``multispike``: the stateless IE-LIF of QSD and SDT-v3 (every step on its own, ``H = X``), with the
  output divided by ``norm``.
* ``bipolar_lif``: ``+1`` when ``H ≥ θ``, ``−1`` when ``H ≤ −θ``, else 0; soft or hard reset; surrogate
  gradient evaluated at ``|H| − θ``.
* ``expand_to_binary`` / ``collapse_to_integer``: integer spikes ``[T, *]`` <-> binary spikes over
  ``D`` virtual steps ``[T·D, *]``, so an IE-LIF model runs spike-driven at inference.

The modules (``IELIF``, ``Multispike``, ``BipolarLIF``, ``MPRF``) are in ``spikeops.nn.multibit``.
Backward keeps the spikes as int8 (bipolar −1..1, integer 0..D, hence D ≤ 127).
"""
from __future__ import annotations

import math

import torch

from .neuron.config import FIRE_BIPOLAR, FIRE_INTEGER
from .neuron.config import config_from_surrogate as _config
from .neuron.op import check_input, neuron_multi_step
from .spike_pack import mark_spikes

__all__ = ["ielif", "multispike", "bipolar_lif", "expand_to_binary", "collapse_to_integer"]

ROUNDING_MODES = ("half_up", "half_even")
MAX_LEVELS = 127  # backward stores spikes as int8


# ---------------------------------------------------------------- argument checks
def check_levels(D) -> int:
    if isinstance(D, bool) or not isinstance(D, (int, float)) or not 1 <= D <= MAX_LEVELS or D != int(D):
        raise ValueError(f"D: expected an integer number of spike levels in 1..{MAX_LEVELS}, got {D!r}")
    return int(D)


def check_rounding(rounding) -> bool:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding: expected one of {ROUNDING_MODES}, got {rounding!r}")
    return rounding == "half_even"


def check_norm(norm):
    if norm is None:
        return None
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0:
        raise ValueError(f"norm: expected None or a finite number > 0, got {norm!r}")
    return float(norm)


def integer_config(D, *, tau, decay_input, v_threshold, detach_reset, rounding):
    return _config(None, tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=None,
                   detach_reset=detach_reset, fire_mode=FIRE_INTEGER, levels=check_levels(D),
                   round_half_even=check_rounding(rounding))


def bipolar_config(*, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate_function):
    return _config(surrogate_function, tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                   detach_reset=detach_reset, fire_mode=FIRE_BIPOLAR)


def normalise(spikes, norm):
    return spikes if norm is None else spikes / norm


# ---------------------------------------------------------------- functional forms
def ielif(x: torch.Tensor, v0=None, *, D: int = 4, tau: float | None = 2.0, decay_input: bool = True,
          v_threshold: float = 1.0, rounding: str = "half_up", detach_reset: bool = False, norm: float | None = None,
          backend: str = "auto", store_v_seq: bool = False, store_v_last: bool = True):
    """Multi-step IE-LIF over ``x`` [T, *]. ``tau=None`` integrates without leak (IF charge).

    Returns (spikes / norm, v_last or None, v_seq or None), as ``spikeops.functional.lif``; spikes are integers
    0..D before the optional ``norm``.
    """
    cfg = integer_config(D, tau=tau, decay_input=decay_input, v_threshold=v_threshold, detach_reset=detach_reset,
                          rounding=rounding)
    norm = check_norm(norm)
    spikes, v_last, v_seq = neuron_multi_step(x, v0, cfg=cfg, backend=backend, store_v_seq=store_v_seq,
                                              store_v_last=store_v_last)
    return mark_spikes(normalise(spikes, norm), "integer", cfg.levels, norm=norm), v_last, v_seq


def multispike(x: torch.Tensor, D: int = 4, *, v_threshold: float = 1.0, norm: float | None = None,
               rounding: str = "half_up", backend: str = "auto") -> torch.Tensor:
    """Stateless IE-LIF, element-wise over any shape: ``clamp(round(x / θ), 0, D) / norm``.

    Gradient: ``1 / (θ·norm)`` inside ``[0, D·θ]``, else 0. The published forms:

    * QSD ``Multispike``:      ``multispike(x, 4, v_threshold=1/4, norm=4)``
    * QSD ``Multispike_att``:  ``multispike(x, 4, v_threshold=1/4, norm=2)``  (range [0, 2])
    * SDT-v3 ``MultiSpike``:   ``multispike(x, 4, norm=4, rounding="half_even")``

    QSD computes ``4·x`` where this computes ``x / (1/4)``; both are exact for a power-of-two ``D``.
    For other ``D``, pass ``D·x`` with ``v_threshold=1`` to reproduce ``round(D·x)`` bit for bit.
    """
    check_input(x)
    # IF charge from a zero membrane gives H = X exactly, so one launch over [1, numel] is the stateless map.
    cfg = integer_config(D, tau=None, decay_input=True, v_threshold=v_threshold, detach_reset=True,
                          rounding=rounding)
    norm = check_norm(norm)
    spikes, _, _ = neuron_multi_step(x.reshape(1, -1), None, cfg=cfg, backend=backend, store_v_last=False)
    return mark_spikes(normalise(spikes.view(x.shape), norm), "integer", cfg.levels, norm=norm)


def bipolar_lif(x: torch.Tensor, v0=None, *, tau: float | None = 2.0, decay_input: bool = True,
                v_threshold: float = 1.0, v_reset: float | None = 0.0, detach_reset: bool = False,
                surrogate_function=None, backend: str = "auto", store_v_seq: bool = False, store_v_last: bool = True):
    """Multi-step bipolar (ternary) LIF over ``x`` [T, *]: spikes in {−1, 0, +1}.

    ``v_reset=None`` is the soft reset ``V = H − S·θ``; a number is the hard reset to it after either
    sign. ``tau=None`` integrates without leak (bipolar IF). Returns (spikes, v_last or None, v_seq or None), as
    ``spikeops.functional.lif``.
    """
    cfg = bipolar_config(tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                          detach_reset=detach_reset, surrogate_function=surrogate_function)
    return neuron_multi_step(x, v0, cfg=cfg, backend=backend, store_v_seq=store_v_seq, store_v_last=store_v_last)


# ---------------------------------------------------------------- integer <-> binary spikes
def check_integer_spikes(spikes, D, name):
    if not isinstance(spikes, torch.Tensor) or spikes.dim() < 1:
        raise ValueError(f"{name}: expected a time-major tensor [T, *], got {type(spikes).__name__} "
                         f"{tuple(getattr(spikes, 'shape', ()))}")
    if spikes.numel() and spikes.is_floating_point():
        bad = (spikes < 0) | (spikes > D) | (spikes != spikes.round())
    elif spikes.numel():
        bad = (spikes < 0) | (spikes > D)
    else:
        return
    if bool(bad.any()):
        value = spikes[bad].flatten()[0].item()
        raise ValueError(f"{name}: expected integer spike counts in 0..{D}, found {value}")


def expand_to_binary(spikes: torch.Tensor, D: int) -> torch.Tensor:
    """Integer spikes [T, *] with values 0..D -> binary spikes [T·D, *] over D virtual steps.

    Logical step t becomes steps t·D .. t·D + D − 1, the first ``S[t]`` of which fire (thermometer
    code), so ``Σ_d W·B[t·D + d] = W·S[t]`` for any linear map W without bias. A bias b must be
    added once per logical step (after ``collapse_to_integer``), not once per virtual step.
    """
    D = check_levels(D)
    check_integer_spikes(spikes, D, "spikes")
    slot = torch.arange(D, device=spikes.device).view((1, D) + (1,) * (spikes.dim() - 1))
    binary = (spikes.unsqueeze(1) > slot).to(spikes.dtype)
    return binary.flatten(0, 1)


def collapse_to_integer(binary: torch.Tensor, D: int) -> torch.Tensor:
    """Inverse of ``expand_to_binary``: [T·D, *] -> [T, *], summing each group of D virtual steps.
    Works on binary spikes and on the output of any linear map applied to them."""
    D = check_levels(D)
    if not isinstance(binary, torch.Tensor) or binary.dim() < 1 or binary.shape[0] % D:
        raise ValueError(f"binary: expected a tensor [T·D, *] whose first dimension is a multiple of D={D}, "
                         f"got shape {tuple(getattr(binary, 'shape', ()))}")
    return binary.view((binary.shape[0] // D, D) + tuple(binary.shape[1:])).sum(1)
