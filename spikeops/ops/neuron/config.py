"""The configuration of one neuron call: named fields, validated once, sent to the kernels by name.

``NeuronConfig`` is the one definition of the fields. The C++ operators take them as a float list in
``CONFIG_FIELDS`` order, which csrc/neuron/neuron_math.h declares under the same names (its
``SPIKEOPS_NEURON_CONFIG_FIELDS`` list, exported as ``spikeops._C.neuron_config_fields()`` and checked
by tests/test_neuron_table.py); the Triton launchers read the fields by attribute name.
"""
from __future__ import annotations

import functools
import math
import struct
from typing import NamedTuple

import torch

from ...surrogate import resolve_surrogate
from .table import CHARGE_LAW_IDS, CHARGE_LAWS, FIRE_BINARY, FIRE_BIPOLAR, FIRE_INTEGER, FIRE_MODES

__all__ = ["NeuronConfig", "CONFIG_FIELDS", "make_config", "config_from_surrogate", "FIRE_BINARY", "FIRE_BIPOLAR",
           "FIRE_INTEGER"]


class NeuronConfig(NamedTuple):
    charge_law: int         # position in table.CHARGE_LAWS
    # charge-law parameters; a law reads only the ones its table entry lists (the others stay 0)
    tau: float
    decay_input: bool
    v_rest: float           # the potential a leaky law decays toward (LIF: v_reset, or 0 with a soft reset)
    v_c: float
    a0: float
    delta_T: float
    theta_rh: float
    # fire
    fire_mode: int          # position in table.FIRE_MODES
    v_threshold: float
    levels: int             # integer mode: the largest spike D
    round_half_even: bool   # integer mode: ties to even (else half up)
    # reset
    hard_reset: bool        # V = v_reset where the neuron fired; soft: V = H - S * theta
    v_reset: float
    detach_reset: bool
    # surrogate gradient of the binary and bipolar fire
    surrogate: int          # id in spikeops.surrogate.SURROGATES
    alpha: float

    @classmethod
    def from_list(cls, cfg) -> "NeuronConfig":
        """The config an operator received as its ``cfg`` float list (the inverse of as_list)."""
        if len(cfg) != len(cls._fields):
            raise ValueError(f"cfg: expected the {len(cls._fields)} neuron configuration fields {cls._fields}, "
                             f"got {len(cfg)} values")
        return cls(*(_FIELD_TYPES[name](value) for name, value in zip(cls._fields, cfg)))

    @property
    def law(self):
        return CHARGE_LAWS[self.charge_law]

    @property
    def leak(self) -> float:
        """1/tau of a fixed-tau leaky law (0 otherwise), rounded once, here, for every backend."""
        return 1.0 / self.tau if self.law.name == "divide_by_tau" else 0.0

    def as_list(self) -> list[float]:
        return [float(v) for v in self]


CONFIG_FIELDS: tuple[str, ...] = NeuronConfig._fields
_FIELD_TYPES = {name: {"int": int, "bool": bool}.get(getattr(kind, "__forward_arg__", kind), float)
                for name, kind in NeuronConfig.__annotations__.items()}


_NUMBERS = (int, float, torch.SymInt, torch.SymFloat)


def _finite(name, value):
    # Comparisons rather than math.isfinite, which a symbolic float of torch.compile(dynamic=True) does not take;
    # NaN fails both.
    if isinstance(value, bool) or not isinstance(value, _NUMBERS) or not -math.inf < value < math.inf:
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if isinstance(value, (torch.SymInt, torch.SymFloat)) or torch.compiler.is_compiling():
        # Under torch.compile the modules' hyper-parameters were already checked when they were built.
        return value if isinstance(value, (torch.SymInt, torch.SymFloat)) else float(value)
    value = float(value)
    # The kernels compute in float32 for every input but float64: a value that float32 rounds to 0 or to
    # Inf would change the neuron silently (and differently per backend).
    try:
        rounded = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        rounded = math.inf
    if math.isinf(rounded) or (value != 0.0 and rounded == 0.0):
        raise ValueError(f"{name}: expected a number that float32 represents (the kernels compute in float32), "
                         f"got {value!r}, which float32 rounds to {rounded}")
    return value


# The numeric law parameters set here from arguments (decay_input and v_rest have their own rules below); a law
# that does not read one leaves it 0.
_LAW_SCALARS = tuple(dict.fromkeys(name for law in CHARGE_LAWS for name in law.params
                                   if name not in ("decay_input", "v_rest")))

# Constraints of the laws' parameters beyond finiteness (SpikingJelly asserts the same ones).
_PARAMETER_RULES = {
    "tau": (lambda value: value > 1.0, "must be > 1 (1/tau is the leak per step)"),
    "a0": (lambda value: value > 0.0, "must be > 0"),
    "delta_T": (lambda value: value > 0.0, "must be > 0"),
}


def make_config(*, tau: float | None = None, decay_input: bool = True, v_threshold: float, v_reset: float | None,
                detach_reset: bool, surrogate, alpha: float, learnable_tau: bool = False,
                fire_mode: int = FIRE_BINARY, levels: int = 1, round_half_even: bool = False,
                charge_law: str | None = None, v_rest: float = 0.0, **law_parameters) -> NeuronConfig:
    """Validated config; raises ValueError naming the argument.

    ``charge_law`` names a table entry; None keeps the LIF family's shorthand: ``tau=None`` is IF,
    ``learnable_tau=True`` PLIF, a number LIF. ``law_parameters`` are the law's other fields by name
    (``v_c``, ``a0``, ``delta_T``, ``theta_rh``).
    """
    if charge_law is None:
        charge_law = "multiply_leak" if learnable_tau else "integrate" if tau is None else "divide_by_tau"
    if charge_law not in CHARGE_LAW_IDS:
        raise ValueError(f"charge_law: expected one of {tuple(CHARGE_LAW_IDS)}, got {charge_law!r}")
    law = CHARGE_LAWS[CHARGE_LAW_IDS[charge_law]]
    if fire_mode not in range(len(FIRE_MODES)):
        raise ValueError(f"fire_mode: expected an id in 0..{len(FIRE_MODES) - 1} {FIRE_MODES}, got {fire_mode!r}")
    v_threshold = _finite("v_threshold", v_threshold)
    if v_threshold <= 0 and fire_mode != FIRE_BINARY:
        raise ValueError(f"v_threshold: must be > 0 for this neuron, got {v_threshold}")
    if fire_mode == FIRE_INTEGER and (isinstance(levels, bool) or not isinstance(levels, (int, float))
                                      or not 1 <= levels <= 127 or levels != int(levels)):
        # Backward saves the spikes as int8, so the largest level must fit in it.
        raise ValueError(f"levels: expected an integer D in 1..127, got {levels!r}")
    if v_reset is not None:
        v_reset = _finite("v_reset", v_reset)
    unknown = set(law_parameters) - set(law.params)
    if unknown:
        raise TypeError(f"make_config: the {charge_law!r} charge law takes no parameter(s) {sorted(unknown)}")
    fields = dict.fromkeys(_LAW_SCALARS, 0.0)
    if "tau" in law.params:
        fields["tau"] = tau
    fields.update(law_parameters)
    for name in (name for name in law.params if name in _LAW_SCALARS):
        fields[name] = _finite(name, fields[name])
        rule = _PARAMETER_RULES.get(name)
        if rule is not None and not rule[0](fields[name]):
            raise ValueError(f"{name}: {rule[1]}, got {fields[name]}")
    if law.name in ("divide_by_tau", "multiply_leak"):
        v_rest = 0.0 if v_reset is None else v_reset
    elif "v_rest" in law.params:
        v_rest = _finite("v_rest", v_rest)
    else:
        v_rest = 0.0
    return NeuronConfig(
        charge_law=CHARGE_LAW_IDS[charge_law], decay_input=bool(decay_input), v_rest=v_rest, **fields,
        fire_mode=int(fire_mode), v_threshold=v_threshold, levels=int(levels), round_half_even=bool(round_half_even),
        hard_reset=v_reset is not None, v_reset=0.0 if v_reset is None else v_reset, detach_reset=bool(detach_reset),
        surrogate=surrogate, alpha=float(alpha),
    )


def config_from_surrogate(surrogate_function, **kwargs) -> NeuronConfig:
    """make_config with the surrogate given as a spikeops.surrogate object, name or None (Sigmoid)."""
    surrogate = resolve_surrogate(surrogate_function)
    kwargs.update(surrogate=surrogate.id, alpha=surrogate.alpha)
    if torch.compiler.is_compiling() or not all(type(v) in _CACHEABLE for v in kwargs.values()):
        return make_config(**kwargs)
    # Every neuron call builds its config; validating it again is a good share of a call's Python cost (more
    # so after the kernel has swept the caches). Floats are keyed by their bits: 0.0 == -0.0 as keys, but a
    # v_reset of -0.0 gives membranes of -0.0.
    return _cached_config(tuple((k, type(v), v.hex() if type(v) is float else v) for k, v in sorted(kwargs.items())))


_CACHEABLE = (bool, int, float, str, type(None))


@functools.lru_cache(maxsize=256)
def _cached_config(key) -> NeuronConfig:
    return make_config(**{k: float.fromhex(v) if t is float else v for k, t, v in key})
