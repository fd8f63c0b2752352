"""``spikingjelly.clock_driven.neuron`` on spikeops.

The legacy (0.0.0.0.12 / 0.0.0.0.14) classes with their constructor arguments, defaults (surrogate
``Sigmoid(alpha=4)``, hard reset to 0, ``detach_reset=False``) and class hierarchy (``MultiStepLIFNode`` is a
``LIFNode``), built on ``spikeops.LIF`` / ``IF`` / ``PLIF``. Parameter names are the legacy ones (PLIF's
``w``; LIF and IF hold none), so legacy checkpoints load with ``strict=True``.

``backend='torch'`` and ``backend='cupy'`` are both accepted and run on the spikeops backend chosen by
``spikeops.legacy.install(backend=...)`` ("auto": the fused CUDA kernels on GPU, the fused C++ kernels on
CPU); the legacy value is kept in ``legacy_backend``. ``cupy_fp32_inference`` (single-step) and
``lava_s_cale`` are accepted and have no effect on the numbers. ``backend='lava'`` is refused.

One difference: the legacy multi-step neurons always kept the membrane sequence in ``v_seq``; here
``v_seq`` stays ``None`` unless ``store_v_seq = True`` is set on the module (it costs memory and time).
"""
from __future__ import annotations

from ..nn.neurons import IF, LIF, PLIF
from . import _state
from ._errors import LegacyUnsupportedError, reject_unknown, unsupported
from .surrogate import Sigmoid

__all__ = ["IFNode", "LIFNode", "ParametricLIFNode", "MultiStepIFNode", "MultiStepLIFNode",
           "MultiStepParametricLIFNode"]

_LEGACY_BACKENDS = ("torch", "cupy")


def _surrogate(surrogate_function):
    # The legacy default argument is surrogate.Sigmoid() (alpha = 4).
    return Sigmoid() if surrogate_function is None else surrogate_function


def _backend(cls: type, backend) -> str:
    if backend == "lava":
        raise LegacyUnsupportedError(
            f"{cls.__name__}(backend='lava') is not supported by spikeops.legacy (it runs the network on Loihi via "
            "lava-dl); use backend='torch' or 'cupy', which spikeops runs fused, or SpikingJelly 0.0.0.0.14 for lava")
    if backend not in _LEGACY_BACKENDS:
        raise ValueError(f"{cls.__name__}: backend={backend!r}; the legacy multi-step neurons take 'torch' or 'cupy' "
                         f"(both run on the spikeops backend chosen by spikeops.legacy.install(backend=...))")
    return _state.backend


class _LegacyNeuron:
    """Mixed into every legacy class: the legacy ``extra_repr``."""

    def extra_repr(self):
        text = (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"surrogate_function={self.surrogate_function}, spikeops_backend={self.backend}")
        if getattr(self, "legacy_backend", None) is not None:
            text += f", backend={self.legacy_backend}"
        return text


class IFNode(_LegacyNeuron, IF):
    """Legacy single-step ``IFNode(v_threshold=1., v_reset=0., surrogate_function=Sigmoid(), detach_reset=False,
    cupy_fp32_inference=False)``."""

    def __init__(self, v_threshold: float = 1., v_reset: float = 0., surrogate_function=None,
                 detach_reset: bool = False, cupy_fp32_inference: bool = False, **unknown):
        reject_unknown(type(self), unknown, "v_threshold=1., v_reset=0., surrogate_function=surrogate.Sigmoid(), "
                                            "detach_reset=False, cupy_fp32_inference=False")
        IF.__init__(self, v_threshold=v_threshold, v_reset=v_reset, surrogate_function=_surrogate(surrogate_function),
                    detach_reset=detach_reset, step_mode="s", backend=_state.backend)
        self.cupy_fp32_inference = cupy_fp32_inference
        self.legacy_backend = None


class MultiStepIFNode(IFNode):
    """Legacy ``MultiStepIFNode(v_threshold=1., v_reset=0., surrogate_function=Sigmoid(), detach_reset=False,
    backend='torch', lava_s_cale=64)``; input [T, *]."""

    def __init__(self, v_threshold: float = 1., v_reset: float = 0., surrogate_function=None,
                 detach_reset: bool = False, backend: str = "torch", lava_s_cale=1 << 6, **unknown):
        reject_unknown(type(self), unknown, "v_threshold=1., v_reset=0., surrogate_function=surrogate.Sigmoid(), "
                                            "detach_reset=False, backend='torch', lava_s_cale=64")
        IF.__init__(self, v_threshold=v_threshold, v_reset=v_reset, surrogate_function=_surrogate(surrogate_function),
                    detach_reset=detach_reset, step_mode="m", backend=_backend(type(self), backend))
        self.legacy_backend = backend
        self.lava_s_cale = lava_s_cale
        self.cupy_fp32_inference = False


class LIFNode(_LegacyNeuron, LIF):
    """Legacy single-step ``LIFNode(tau=2., decay_input=True, v_threshold=1., v_reset=0.,
    surrogate_function=Sigmoid(), detach_reset=False, cupy_fp32_inference=False)``."""

    def __init__(self, tau: float = 2., decay_input: bool = True, v_threshold: float = 1., v_reset: float = 0.,
                 surrogate_function=None, detach_reset: bool = False, cupy_fp32_inference: bool = False, **unknown):
        reject_unknown(type(self), unknown, "tau=2., decay_input=True, v_threshold=1., v_reset=0., "
                                            "surrogate_function=surrogate.Sigmoid(), detach_reset=False, "
                                            "cupy_fp32_inference=False")
        LIF.__init__(self, tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                     surrogate_function=_surrogate(surrogate_function), detach_reset=detach_reset, step_mode="s",
                     backend=_state.backend)
        self.cupy_fp32_inference = cupy_fp32_inference
        self.legacy_backend = None

    def extra_repr(self):
        return super().extra_repr() + f", tau={self.tau}"


class MultiStepLIFNode(LIFNode):
    """Legacy ``MultiStepLIFNode(tau=2., decay_input=True, v_threshold=1., v_reset=0., surrogate_function=Sigmoid(),
    detach_reset=False, backend='torch', lava_s_cale=64)``; input [T, *]."""

    def __init__(self, tau: float = 2., decay_input: bool = True, v_threshold: float = 1., v_reset: float = 0.,
                 surrogate_function=None, detach_reset: bool = False, backend: str = "torch", lava_s_cale=1 << 6,
                 **unknown):
        reject_unknown(type(self), unknown, "tau=2., decay_input=True, v_threshold=1., v_reset=0., "
                                            "surrogate_function=surrogate.Sigmoid(), detach_reset=False, "
                                            "backend='torch', lava_s_cale=64")
        LIF.__init__(self, tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                     surrogate_function=_surrogate(surrogate_function), detach_reset=detach_reset, step_mode="m",
                     backend=_backend(type(self), backend))
        self.legacy_backend = backend
        self.lava_s_cale = lava_s_cale
        self.cupy_fp32_inference = False


class ParametricLIFNode(_LegacyNeuron, PLIF):
    """Legacy single-step ``ParametricLIFNode(init_tau=2., decay_input=True, v_threshold=1., v_reset=0.,
    surrogate_function=Sigmoid(), detach_reset=False)``; learnable ``w`` with 1/tau = sigmoid(w)."""

    def __init__(self, init_tau: float = 2., decay_input: bool = True, v_threshold: float = 1., v_reset: float = 0.,
                 surrogate_function=None, detach_reset: bool = False, **unknown):
        reject_unknown(type(self), unknown, "init_tau=2., decay_input=True, v_threshold=1., v_reset=0., "
                                            "surrogate_function=surrogate.Sigmoid(), detach_reset=False")
        PLIF.__init__(self, init_tau=init_tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                      surrogate_function=_surrogate(surrogate_function), detach_reset=detach_reset, step_mode="s",
                      backend=_state.backend)
        self.legacy_backend = None

    def extra_repr(self):
        return super().extra_repr() + f", tau={self.tau}"


class MultiStepParametricLIFNode(ParametricLIFNode):
    """Legacy ``MultiStepParametricLIFNode(init_tau=2., decay_input=True, v_threshold=1., v_reset=0.,
    surrogate_function=Sigmoid(), detach_reset=False, backend='torch')``; input [T, *]."""

    def __init__(self, init_tau: float = 2., decay_input: bool = True, v_threshold: float = 1., v_reset: float = 0.,
                 surrogate_function=None, detach_reset: bool = False, backend: str = "torch", **unknown):
        reject_unknown(type(self), unknown, "init_tau=2., decay_input=True, v_threshold=1., v_reset=0., "
                                            "surrogate_function=surrogate.Sigmoid(), detach_reset=False, "
                                            "backend='torch'")
        PLIF.__init__(self, init_tau=init_tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                      surrogate_function=_surrogate(surrogate_function), detach_reset=detach_reset, step_mode="m",
                      backend=_backend(type(self), backend))
        self.legacy_backend = backend


_AB = "spikingjelly.activation_based.neuron.{} (SpikingJelly 2.0, unfused)"
BaseNode = unsupported("neuron", "BaseNode",
                       "spikingjelly.activation_based.neuron.BaseNode (SpikingJelly 2.0) for a custom neuron, or "
                       "MultiStepLIFNode / MultiStepIFNode / MultiStepParametricLIFNode, which spikeops runs fused")
AdaptiveBaseNode = unsupported("neuron", "AdaptiveBaseNode", _AB.format("AdaptiveBaseNode"))
# spikeops runs these fused as spikeops.QIF / spikeops.EIF, with the arguments of SpikingJelly 2.0's classes.
_TABLE = "spikeops.{0} (fused; the arguments of spikingjelly.activation_based.neuron.{0}Node)"
QIFNode = unsupported("neuron", "QIFNode", _TABLE.format("QIF"))
EIFNode = unsupported("neuron", "EIFNode", _TABLE.format("EIF"))
MultiStepEIFNode = unsupported("neuron", "MultiStepEIFNode", _TABLE.format("EIF") + " with step_mode='m'")
GeneralNode = unsupported("neuron", "GeneralNode", _AB.format("GeneralNode"))
MultiStepGeneralNode = unsupported("neuron", "MultiStepGeneralNode", _AB.format("GeneralNode") + " with step_mode='m'")
LIAFNode = unsupported("neuron", "LIAFNode", _AB.format("LIAFNode"))
