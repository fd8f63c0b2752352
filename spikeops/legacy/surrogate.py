"""``spikingjelly.clock_driven.surrogate`` on spikeops: the legacy surrogate classes with their legacy
signatures ``(alpha=<legacy default>, spiking=True)``. Each is a spikeops surrogate, so a neuron given one
runs it fused. Surrogates spikeops has no kernel for raise at construction, naming a replacement."""
from __future__ import annotations

from .. import surrogate as _surrogate
from ._errors import unsupported

__all__ = ["Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "Erf", "heaviside"]


def _legacy(base: type, legacy_default: float) -> type:
    def __init__(self, alpha: float = legacy_default, spiking: bool = True):
        if spiking is not True:
            raise ValueError(f"surrogate.{base.name}(spiking={spiking!r}): spikeops.legacy runs spiking surrogates only "
                             "(spiking=False makes the forward the smooth primitive function, which no fused kernel "
                             "computes); use spikingjelly.activation_based.surrogate for that")
        base.__init__(self, alpha)
        self.spiking = True

    return type(base.name, (base,), {"__init__": __init__, "__module__": __name__,
                                     "__doc__": f"Legacy ``surrogate.{base.name}(alpha={legacy_default}, spiking=True)``."})


# The legacy defaults (spikingjelly 0.0.0.0.12-14 clock_driven/surrogate.py).
Sigmoid = _legacy(_surrogate.Sigmoid, 4.0)
ATan = _legacy(_surrogate.ATan, 2.0)
PiecewiseQuadratic = _legacy(_surrogate.PiecewiseQuadratic, 1.0)
PiecewiseExp = _legacy(_surrogate.PiecewiseExp, 1.0)
SoftSign = _legacy(_surrogate.SoftSign, 2.0)
Erf = _legacy(_surrogate.Erf, 2.0)

_INSTEAD = "spikingjelly.activation_based.surrogate.{name} (unfused) or one of Sigmoid, ATan, PiecewiseQuadratic, " \
           "PiecewiseExp, SoftSign, Erf"
NonzeroSignLogAbs = unsupported("surrogate", "NonzeroSignLogAbs", _INSTEAD.format(name="NonzeroSignLogAbs"))
PiecewiseLeakyReLU = unsupported("surrogate", "PiecewiseLeakyReLU", _INSTEAD.format(name="PiecewiseLeakyReLU"))
SquarewaveFourierSeries = unsupported("surrogate", "SquarewaveFourierSeries",
                                      _INSTEAD.format(name="SquarewaveFourierSeries"))
S2NN = unsupported("surrogate", "S2NN", _INSTEAD.format(name="S2NN"))
QPseudoSpike = unsupported("surrogate", "QPseudoSpike", _INSTEAD.format(name="QPseudoSpike"))


def heaviside(x):
    """The legacy ``surrogate.heaviside``: 1 where x >= 0, else 0 (no gradient)."""
    return (x >= 0).to(x.dtype)
