"""Neuron modules generated from the neuron table (spikeops/ops/neuron/table.py::NEURON_KINDS).

Each kind becomes a ``BaseNeuron`` subclass named after it (``spikeops.QIF``, ``spikeops.EIF``) whose
constructor takes the SpikingJelly 2.0 class's arguments with its defaults: the charge law's parameters
first, then ``v_threshold=1.0, v_rest=0.0, v_reset=<the kind's default>, surrogate_function,
detach_reset``, and spikeops' ``step_mode``, ``backend``, ``store_v_seq``.
"""
from __future__ import annotations

import inspect

from ..ops.neuron.config import config_from_surrogate
from ..ops.neuron.table import NEURON_KINDS, NeuronKind
from .neurons import BaseNeuron

__all__ = ["table_neuron"] + [kind.name for kind in NEURON_KINDS]

_COMMON_ARGUMENTS = (("v_threshold", 1.0), ("v_rest", 0.0))
_BASE_ARGUMENTS = (("surrogate_function", None), ("detach_reset", False), ("step_mode", "s"), ("backend", "auto"),
                   ("store_v_seq", False))


def table_neuron(kind: NeuronKind) -> type:
    """The module class of a table neuron kind."""
    arguments = [*kind.defaults.items(), *_COMMON_ARGUMENTS, ("v_reset", kind.v_reset), *_BASE_ARGUMENTS]
    parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter(name, parameter, default=default) for name, default in arguments])
    law_parameters = tuple(kind.defaults)

    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{kind.name}: {error}") from None
        bound.apply_defaults()
        values = bound.arguments
        for name in (*law_parameters, "v_rest"):
            setattr(self, name, values[name])
        v_reset = values["v_reset"]
        # Validates every number (through _neuron_config) before the comparisons below use them.
        BaseNeuron.__init__(self, values["v_threshold"], v_reset, values["surrogate_function"], values["detach_reset"],
                            values["step_mode"], values["backend"], values["store_v_seq"])
        # SpikingJelly's constraints for these neurons (it asserts them).
        if v_reset is not None and not self.v_threshold > v_reset:
            raise ValueError(f"v_threshold: must be > v_reset ({v_reset}), got {self.v_threshold!r}")
        if v_reset is not None and not self.v_rest >= v_reset:
            raise ValueError(f"v_rest: must be >= v_reset ({v_reset}), got {self.v_rest!r}")

    def _neuron_config(self):
        return config_from_surrogate(
            self.surrogate_function, charge_law=kind.charge_law, v_threshold=self.v_threshold, v_reset=self.v_reset,
            detach_reset=self.detach_reset, v_rest=self.v_rest, **{name: getattr(self, name) for name in law_parameters})

    def extra_repr(self):
        own = ", ".join(f"{name}={getattr(self, name)}" for name in (*law_parameters, "v_rest"))
        return own + ", " + BaseNeuron.extra_repr(self)

    __init__.__signature__ = signature.replace(
        parameters=[inspect.Parameter("self", parameter), *signature.parameters.values()])
    doc = (f"Drop-in for SpikingJelly's ``{kind.spikingjelly}``" if kind.spikingjelly else f"The {kind.name} neuron")
    doc += f" (charge law {kind.charge_law!r}), generated from the neuron table.\n\nArguments: {signature}"
    return type(kind.name, (BaseNeuron,), {"__init__": __init__, "_neuron_config": _neuron_config,
                                          "extra_repr": extra_repr, "__doc__": doc, "__module__": __name__,
                                          "table_kind": kind})


for _kind in NEURON_KINDS:
    globals()[_kind.name] = table_neuron(_kind)
del _kind
