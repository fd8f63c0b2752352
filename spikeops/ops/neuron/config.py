"""Hyper-parameters of one neuron call, in the flat order csrc/neuron_params.h unpacks."""
from __future__ import annotations

import math
from typing import NamedTuple

FIRE_BINARY, FIRE_BIPOLAR, FIRE_INTEGER = 0, 1, 2


class NeuronConfig(NamedTuple):
    leak: float             # 1/tau; 0 for IF; PLIF passes its learnable 1/tau as a tensor instead
    tau: float              # > 0: the charge divides by tau (LIF); 0: multiplies by leak (IF, PLIF)
    decay_input: bool
    v_threshold: float
    v_reset: float          # ignored when soft reset
    hard_reset: bool
    detach_reset: bool
    surrogate: int
    alpha: float
    fire_mode: int = FIRE_BINARY
    levels: int = 1         # largest integer spike (IE-LIF's D)
    round_half_even: bool = False

    def as_list(self) -> list[float]:
        return [float(v) for v in self]


def _finite(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def make_config(*, tau: float | None, decay_input: bool, v_threshold: float, v_reset: float | None,
                detach_reset: bool, surrogate, alpha: float, learnable_tau: bool = False,
                fire_mode: int = FIRE_BINARY, levels: int = 1, round_half_even: bool = False) -> NeuronConfig:
    """Validated config. ``tau=None`` means IF (no leak). Raises ValueError naming the argument."""
    v_threshold = _finite("v_threshold", v_threshold)
    if v_threshold <= 0 and fire_mode != FIRE_BINARY:
        raise ValueError(f"v_threshold: must be > 0 for this neuron, got {v_threshold}")
    if fire_mode == FIRE_INTEGER and (isinstance(levels, bool) or not isinstance(levels, (int, float))
                                      or not 1 <= levels <= 127 or levels != int(levels)):
        # Backward saves the spikes as int8, so the largest level must fit in it.
        raise ValueError(f"levels: expected an integer D in 1..127, got {levels!r}")
    if v_reset is not None:
        v_reset = _finite("v_reset", v_reset)
    if tau is None or learnable_tau:
        leak, divisor = 0.0, 0.0
    else:
        tau = _finite("tau", tau)
        if tau <= 1.0:
            raise ValueError(f"tau: must be > 1 (1/tau is the leak per step), got {tau}")
        leak, divisor = 1.0 / tau, tau
    return NeuronConfig(
        leak=leak, tau=divisor, decay_input=bool(decay_input), v_threshold=v_threshold,
        v_reset=0.0 if v_reset is None else v_reset, hard_reset=v_reset is not None,
        detach_reset=bool(detach_reset), surrogate=surrogate, alpha=float(alpha),
        fire_mode=fire_mode, levels=int(levels), round_half_even=bool(round_half_even),
    )


def config_from_surrogate(surrogate_function, **kwargs) -> NeuronConfig:
    """make_config with the surrogate given as a spikeops.surrogate object, name or None (Sigmoid)."""
    from ...surrogate import resolve_surrogate
    surrogate = resolve_surrogate(surrogate_function)
    return make_config(surrogate=surrogate.id, alpha=surrogate.alpha, **kwargs)
