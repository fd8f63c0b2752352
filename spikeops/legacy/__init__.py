"""Run code written for SpikingJelly 0.0.0.0.12 / 0.0.0.0.14 (``spikingjelly.clock_driven``) on spikeops.

``spikeops.legacy.install()`` makes ``spikingjelly.clock_driven`` importable, with ``neuron``, ``surrogate``,
``layer``, ``functional`` (and ``base`` from SpikingJelly 2.0 when present) backed by spikeops::

    import spikeops.legacy; spikeops.legacy.install()      # before the model files are imported
    from spikingjelly.clock_driven.neuron import MultiStepLIFNode   # now a spikeops LIF

or, for a script left unchanged: ``python -m spikeops.legacy train.py --its --args``.

It sits next to an installed SpikingJelly 2.0, which provides the rest of the package
(``spikingjelly.activation_based``, ``spikingjelly.datasets``); without SpikingJelly an empty
``spikingjelly`` package is registered so that ``clock_driven`` imports. If a SpikingJelly that has its own
``clock_driven`` (0.0.0.0.x) is installed, the modules listed above replace its ones; install before the
model files import them. Unsupported legacy classes import but raise ``LegacyUnsupportedError`` when built,
naming what to use instead; unknown constructor arguments raise ``TypeError`` naming them.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from ..backends import BACKENDS
from . import _state
from ._errors import LegacyUnsupportedError

__all__ = ["install", "uninstall", "installed", "set_backend", "LegacyUnsupportedError"]

_PACKAGE = "spikingjelly.clock_driven"
_SUBMODULES = ("neuron", "surrogate", "layer", "functional")
_saved: dict | None = None  # sys.modules entries replaced by install(), restored by uninstall()


def _legacy_package(real_path) -> types.ModuleType:
    package = types.ModuleType(_PACKAGE, "spikingjelly.clock_driven provided by spikeops.legacy")
    package.__path__ = list(real_path or [])  # submodules spikeops does not provide come from a real clock_driven
    package.__package__ = _PACKAGE
    package.__spikeops_legacy__ = True
    return package


def installed() -> bool:
    """True while ``spikingjelly.clock_driven`` is the spikeops one."""
    return getattr(sys.modules.get(_PACKAGE), "__spikeops_legacy__", False)


def install(backend: str = "auto") -> types.ModuleType:
    """Registers ``spikingjelly.clock_driven`` (and its ``neuron``, ``surrogate``, ``layer``, ``functional``
    modules) in ``sys.modules``; returns the package. Legacy neurons built afterwards run on ``backend``
    (one of spikeops' backends, whatever their legacy ``backend='torch'|'cupy'`` says). Calling it again
    only changes the backend for neurons built from then on."""
    global _saved
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    _state.backend = backend
    if installed():
        return sys.modules[_PACKAGE]
    saved = {name: sys.modules.get(name) for name in
             ("spikingjelly", _PACKAGE, *(f"{_PACKAGE}.{s}" for s in _SUBMODULES), f"{_PACKAGE}.base")}
    try:
        import spikingjelly
    except ImportError:
        spikingjelly = types.ModuleType("spikingjelly", "placeholder registered by spikeops.legacy (SpikingJelly is "
                                                        "not installed); only clock_driven is provided")
        spikingjelly.__path__ = []
        sys.modules["spikingjelly"] = spikingjelly
    real_path = None
    try:
        spec = importlib.util.find_spec(_PACKAGE)
        real_path = spec.submodule_search_locations if spec is not None else None
    except (ImportError, ValueError):
        pass
    package = _legacy_package(real_path)
    sys.modules[_PACKAGE] = package
    for name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        sys.modules[f"{_PACKAGE}.{name}"] = module
        setattr(package, name, module)
    try:
        from spikingjelly.activation_based import base
    except ImportError:
        pass
    else:
        sys.modules[f"{_PACKAGE}.base"] = base
        package.base = base
    saved["spikingjelly.clock_driven(attr)"] = getattr(spikingjelly, "clock_driven", None)
    spikingjelly.clock_driven = package
    _saved = saved
    return package


def uninstall() -> None:
    """Undoes ``install()``: the ``sys.modules`` entries it replaced are restored. Modules imported while it
    was installed keep the spikeops classes they bound."""
    global _saved
    if _saved is None:
        return
    saved, _saved = _saved, None
    attr = saved.pop("spikingjelly.clock_driven(attr)", None)
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    spikingjelly = sys.modules.get("spikingjelly")
    if spikingjelly is not None:
        if attr is None:
            if hasattr(spikingjelly, "clock_driven"):
                delattr(spikingjelly, "clock_driven")
        else:
            spikingjelly.clock_driven = attr


def set_backend(model, backend: str):
    """Moves every legacy neuron of ``model`` to spikeops ``backend``; returns ``model``."""
    from ..nn.neurons import BaseNeuron

    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    for module in model.modules():
        if isinstance(module, BaseNeuron):
            module.backend = backend
    return model
