"""Test helper: run a model file written against ``spikingjelly.clock_driven`` either on spikeops
(``spikeops.legacy.install``) or on plain SpikingJelly 2.0 neurons (a reference shim defined here, which maps
each legacy class onto the SpikingJelly 2.0 class it became, in multi-step mode with the pure-PyTorch
backend). The two builds of the same file are the models the legacy tests compare."""
from __future__ import annotations

import contextlib
import runpy
import sys
import types
from pathlib import Path

import spikeops.legacy

MODELS = Path(__file__).parent / "legacy_models"
_NAMES = ["spikingjelly.clock_driven", *(f"spikingjelly.clock_driven.{n}" for n in
                                         ("neuron", "surrogate", "layer", "functional", "base"))]


def _reference_package() -> types.ModuleType:
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    def sg(surrogate_function):
        return sj_surrogate.Sigmoid(alpha=4.0) if surrogate_function is None else surrogate_function

    neuron = types.ModuleType("spikingjelly.clock_driven.neuron")

    def MultiStepLIFNode(tau=2., decay_input=True, v_threshold=1., v_reset=0., surrogate_function=None,
                         detach_reset=False, backend='torch'):
        return sj_neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                                 surrogate_function=sg(surrogate_function), detach_reset=detach_reset, step_mode="m")

    def LIFNode(tau=2., decay_input=True, v_threshold=1., v_reset=0., surrogate_function=None, detach_reset=False):
        return sj_neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                                 surrogate_function=sg(surrogate_function), detach_reset=detach_reset, step_mode="s")

    def MultiStepIFNode(v_threshold=1., v_reset=0., surrogate_function=None, detach_reset=False, backend='torch'):
        return sj_neuron.IFNode(v_threshold=v_threshold, v_reset=v_reset, surrogate_function=sg(surrogate_function),
                                detach_reset=detach_reset, step_mode="m")

    def MultiStepParametricLIFNode(init_tau=2., decay_input=True, v_threshold=1., v_reset=0.,
                                   surrogate_function=None, detach_reset=False, backend='torch'):
        return sj_neuron.ParametricLIFNode(init_tau=init_tau, decay_input=decay_input, v_threshold=v_threshold,
                                           v_reset=v_reset, surrogate_function=sg(surrogate_function),
                                           detach_reset=detach_reset, step_mode="m")

    for f in (MultiStepLIFNode, LIFNode, MultiStepIFNode, MultiStepParametricLIFNode):
        setattr(neuron, f.__name__, f)
    surrogate = types.ModuleType("spikingjelly.clock_driven.surrogate")
    surrogate.Sigmoid = lambda alpha=4.0: sj_surrogate.Sigmoid(alpha=alpha)
    surrogate.ATan = lambda alpha=2.0: sj_surrogate.ATan(alpha=alpha)
    layer = types.ModuleType("spikingjelly.clock_driven.layer")
    layer.SeqToANNContainer = sj_layer.SeqToANNContainer
    layer.MultiStepContainer = sj_layer.MultiStepContainer
    functional = types.ModuleType("spikingjelly.clock_driven.functional")
    functional.reset_net = sj_functional.reset_net
    package = types.ModuleType("spikingjelly.clock_driven")
    package.__path__ = []
    package.neuron, package.surrogate, package.layer, package.functional = neuron, surrogate, layer, functional
    return package


@contextlib.contextmanager
def clock_driven(flavour: str, backend: str = "torch"):
    """``spikingjelly.clock_driven`` as ``flavour`` ("spikeops" or "spikingjelly") inside the block."""
    saved = {name: sys.modules.get(name) for name in _NAMES}
    if flavour == "spikeops":
        spikeops.legacy.install(backend=backend)
        try:
            yield sys.modules["spikingjelly.clock_driven"]
        finally:
            spikeops.legacy.uninstall()
        return
    package = _reference_package()
    sys.modules["spikingjelly.clock_driven"] = package
    for name in ("neuron", "surrogate", "layer", "functional"):
        sys.modules[f"spikingjelly.clock_driven.{name}"] = getattr(package, name)
    try:
        yield package
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_model_file(name: str, flavour: str, backend: str = "torch") -> dict:
    """The globals of ``legacy_models/<name>.py`` executed with ``spikingjelly.clock_driven`` as ``flavour``."""
    with clock_driven(flavour, backend) as package:
        namespace = runpy.run_path(str(MODELS / f"{name}.py"), run_name=f"legacy_models_{name}_{flavour}")
        namespace["__clock_driven__"] = package
        return namespace
