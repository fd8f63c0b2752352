"""The one surrogate-gradient table of spikeops.

Ids and formulas here are the contract for every backend: csrc/neuron/neuron_math.h (CPU and CUDA) and
kernels/neuron_math.py (Triton) implement the same ids; tests/test_registration.py checks the C++ names
against ``SURROGATES`` and tests/test_neuron.py runs every surrogate on every backend against the reference.
Formulas: docs/neurons.md. Formulas and the meaning of ``alpha`` are SpikingJelly's, so a
SpikingJelly surrogate object maps onto ours with the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "Surrogate", "SURROGATES", "resolve_surrogate",
    "Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf", "Rect",
]


@dataclass(frozen=True)
class SurrogateKind:
    name: str
    default_alpha: float
    grad: Callable[[torch.Tensor, float], torch.Tensor]  # dS/dx at x = H - theta


def _sigmoid(x, a):
    s = torch.sigmoid(a * x)
    return (1 - s) * s * a


def _atan(x, a):
    z = (math.pi / 2) * a * x
    return (a / 2) / (1 + z * z)


def _piecewise_quadratic(x, a):
    return torch.where(x.abs() > 1 / a, torch.zeros_like(x), a - a * a * x.abs())


def _piecewise_exp(x, a):
    return (a / 2) * torch.exp(-a * x.abs())


def _soft_sign(x, a):
    z = 1 / a + x.abs()
    return 1 / (2 * a * z * z)


def _super_spike(x, a):
    z = x.abs() + 1
    return a / (z * z)


def _erf(x, a):
    z = a * x
    return torch.exp(-z * z) * (a / math.sqrt(math.pi))


def _rect(x, a):
    return torch.where(x.abs() < 0.5 / a, torch.full_like(x, a), torch.zeros_like(x))


# Position in this tuple is the id every kernel uses.
SURROGATES: tuple[SurrogateKind, ...] = (
    SurrogateKind("Sigmoid", 4.0, _sigmoid),
    SurrogateKind("ATan", 2.0, _atan),
    SurrogateKind("PiecewiseQuadratic", 1.0, _piecewise_quadratic),
    SurrogateKind("PiecewiseExp", 1.0, _piecewise_exp),
    SurrogateKind("SoftSign", 2.0, _soft_sign),
    SurrogateKind("SuperSpike", 1.0, _super_spike),
    SurrogateKind("Erf", 2.0, _erf),
    SurrogateKind("Rect", 1.0, _rect),
)
_BY_NAME = {kind.name: i for i, kind in enumerate(SURROGATES)}


class _HeavisideWithSurrogate(torch.autograd.Function):
    """Equality fires (S = 1[x >= 0]); backward is the table's surrogate (differentiable again: plain torch ops).
    setup_context and a generated vmap rule make it usable under torch.func (grad, vmap, jacrev)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, surrogate_id, alpha):
        return (x >= 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, surrogate_id, alpha = inputs
        ctx.save_for_backward(x)
        ctx.surrogate_id, ctx.alpha = surrogate_id, alpha

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.surrogate_id].grad(x, ctx.alpha), None, None


class Surrogate:
    """A surrogate gradient: Heaviside forward, ``SURROGATES[id].grad`` backward."""

    name = "Sigmoid"

    def __init__(self, alpha: float | None = None):
        kind = SURROGATES[_BY_NAME[self.name]]
        alpha = kind.default_alpha if alpha is None else alpha
        # Comparisons rather than math.isfinite: under torch.compile(dynamic=True) a float read from an object is a
        # SymFloat, which math.isfinite does not take.
        if isinstance(alpha, (bool, torch.Tensor)) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ValueError(f"surrogate {self.name}: alpha must be a positive finite number, got {alpha!r}")
        self.alpha = float(alpha)

    @property
    def id(self) -> int:
        return _BY_NAME[self.name]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _HeavisideWithSurrogate.apply(x, self.id, self.alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return SURROGATES[self.id].grad(x, self.alpha)

    def __repr__(self):
        return f"{self.name}(alpha={self.alpha})"

    def __eq__(self, other):
        return isinstance(other, Surrogate) and (self.id, self.alpha) == (other.id, other.alpha)

    def __hash__(self):
        return hash((self.id, self.alpha))


def _make(name: str) -> type[Surrogate]:
    return type(name, (Surrogate,), {"name": name, "__doc__": f"SpikingJelly's {name} surrogate, fused on every backend."})


Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf, Rect = (_make(k.name) for k in SURROGATES)
_CLASSES = {cls.name: cls for cls in (Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf, Rect)}


def resolve_surrogate(surrogate_function) -> Surrogate:
    """Accepts a spikeops surrogate, a name ("ATan"), or a SpikingJelly surrogate object of the same
    name (its ``alpha`` is carried over). Anything else is refused with the list of supported ones."""
    if surrogate_function is None:
        return Sigmoid()
    if isinstance(surrogate_function, Surrogate):
        return surrogate_function
    if isinstance(surrogate_function, str):
        if surrogate_function not in _CLASSES:
            raise ValueError(f"surrogate_function: unknown name {surrogate_function!r}; expected one of {sorted(_CLASSES)}")
        return _CLASSES[surrogate_function]()
    name = type(surrogate_function).__name__
    module = type(surrogate_function).__module__
    if module.startswith("spikingjelly") and name in _CLASSES:
        if not getattr(surrogate_function, "spiking", True):
            raise ValueError(f"surrogate_function: SpikingJelly {name} with spiking=False has no spiking equivalent")
        return _CLASSES[name](getattr(surrogate_function, "alpha", None))
    raise ValueError(
        f"surrogate_function: expected a spikeops surrogate, one of the names {sorted(_CLASSES)}, or the SpikingJelly "
        f"surrogate of one of those names; got {surrogate_function!r}"
    )
