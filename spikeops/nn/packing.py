"""The switches of spike packing (``spikeops.ops.spike_pack``) for models, and the index-free max-pool module.

* ``enable_spike_packing(model)``: forward hooks that turn packing on around ``model``'s forward in training
  (``model.training`` and grad enabled); in eval / under ``no_grad`` nothing is saved and nothing changes.
  The spikeops backbones and ``spikeops.convert`` call it; a user's own model built with spikeops neurons
  calls it once (or is wrapped in ``PackSpikes``). ``disable_spike_packing(model)`` removes the hooks.
* ``PackSpikes(model)``: the same as a wrapper module (``state_dict`` keys gain the ``module.`` prefix; use
  ``enable_spike_packing`` to keep them).
* ``pack_spikes(enabled=True)``: the context manager, for code outside a module or to turn packing off.
* ``SpikeMaxPool2d``: a drop-in ``nn.MaxPool2d`` that keeps no int64 indices for spike input;
  ``use_spike_max_pool(model)`` turns a model's ``nn.MaxPool2d`` modules (SpikingJelly's included) into it.
* ``held_for_backward(fn)``: bytes autograd holds for backward after ``fn()`` (each storage once, packed
  spikes at their packed size).

Design and guarantees: docs/memory.md.
"""
from __future__ import annotations

import threading

import torch
from torch import nn

from ..ops import spike_pack
from ..ops.spike_pack import SavedTensorsCounter, pack_spikes, spike_max_pool2d, storage_key

__all__ = ["enable_spike_packing", "disable_spike_packing", "spike_packing_enabled", "PackSpikes", "pack_spikes",
           "SpikeMaxPool2d", "use_spike_max_pool", "held_for_backward"]

class _Tokens(threading.local):
    def __init__(self):
        self.stack = []


_tokens = _Tokens()


def _pre_hook(module, args):
    # one token per forward, popped by _post_hook (always called, also when forward raises)
    active = module.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
    if active:
        spike_pack.enter()
    _tokens.stack.append(active)


def _post_hook(module, args, output):
    if _tokens.stack and _tokens.stack.pop():
        spike_pack.exit()


def spike_packing_enabled(model: nn.Module) -> bool:
    """Whether ``enable_spike_packing(model)`` is in effect (it survives ``copy.deepcopy`` and pickling)."""
    return any(hook is _pre_hook for hook in model._forward_pre_hooks.values())


def enable_spike_packing(model: nn.Module) -> nn.Module:
    """Packing on around every training forward of ``model`` (idempotent); returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not spike_packing_enabled(model):
        model.register_forward_pre_hook(_pre_hook)
        model.register_forward_hook(_post_hook, always_call=True)
    return model


def disable_spike_packing(model: nn.Module) -> nn.Module:
    """Removes the hooks ``enable_spike_packing`` added; returns ``model``."""
    for hooks, ours in ((model._forward_pre_hooks, _pre_hook), (model._forward_hooks, _post_hook)):
        for key in [key for key, hook in hooks.items() if hook is ours]:
            del hooks[key]
            model._forward_hooks_always_called.pop(key, None)
    return model


class PackSpikes(nn.Module):
    """Wraps ``module``: its training forward runs with spike packing on."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            with pack_spikes():
                return self.module(*args, **kwargs)
        return self.module(*args, **kwargs)


class SpikeMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (same arguments, no parameters or buffers, same outputs and gradients) that, for a
    spike tensor a spikeops neuron returned, keeps the input as bits and no int64 indices, recomputing the
    argmax in backward. Other input takes ``nn.MaxPool2d``'s path, unless ``recompute_indices=True`` (then it
    is saved as it is and the indices are recomputed too)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False, *, recompute_indices: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.recompute_indices = recompute_indices

    @classmethod
    def from_max_pool(cls, pool: nn.MaxPool2d, recompute_indices: bool = False) -> "SpikeMaxPool2d":
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode,
                   recompute_indices=recompute_indices)

    def forward(self, x: torch.Tensor):
        return spike_max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                self.return_indices, recompute_indices=self.recompute_indices)


_SPIKE_POOL_CLASSES: dict[type, type] = {}


def _spike_pool_class(cls: type) -> type:
    """``cls`` (a subclass of ``nn.MaxPool2d``, e.g. SpikingJelly's ``layer.MaxPool2d``) with ``SpikeMaxPool2d``
    placed before ``nn.MaxPool2d`` in its MRO, so that its own ``super().forward`` pools without indices."""
    if issubclass(cls, SpikeMaxPool2d):
        return cls
    if cls is nn.MaxPool2d:
        return SpikeMaxPool2d
    if cls not in _SPIKE_POOL_CLASSES:
        name = f"IndexFree{cls.__name__}"
        _SPIKE_POOL_CLASSES[cls] = type(name, (cls, SpikeMaxPool2d), {
            "__module__": __name__, "__qualname__": name,
            # pickled / deep-copied by the original class, so that loading rebuilds this class
            "__reduce_ex__": lambda self, protocol: (_new_spike_pool, (cls,), self.__dict__)})
    return _SPIKE_POOL_CLASSES[cls]


def _new_spike_pool(cls: type):
    return object.__new__(_spike_pool_class(cls))


def use_spike_max_pool(model: nn.Module, recompute_indices: bool = False) -> int:
    """Makes every ``nn.MaxPool2d`` in ``model`` (subclasses included: SpikingJelly's ``layer.MaxPool2d`` keeps
    its step mode) pool as ``SpikeMaxPool2d``: same outputs and gradients, no int64 indices for spike input
    (and for any input with ``recompute_indices=True``). In place (the modules' class changes; no
    parameters, buffers or state_dict keys change); returns how many pools it changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d) and not isinstance(module, SpikeMaxPool2d):
            module.__class__ = _spike_pool_class(type(module))
            module.recompute_indices = recompute_indices
            changed += 1
    return changed


def held_for_backward(fn, *args, inputs=(), **kwargs) -> dict:
    """Runs ``fn(*args, **kwargs)`` and measures what autograd holds for backward once it returned.

    Returns ``{"held_bytes", "saved_bytes", "packed_bytes", "input_bytes", "output"}``: ``held_bytes`` counts
    every storage saved for backward and still alive after the call (each once), packed spikes at their packed
    size, leaving out the storages of ``inputs`` (tensors the caller holds anyway: ``input_bytes``);
    ``saved_bytes`` everything saved during the call, freed since or not; ``packed_bytes`` the packed part of
    ``held_bytes``. Packing applies as in training: a model with packing enabled (or an enclosing
    ``pack_spikes()``) is measured packed. ``output`` keeps the graph alive; drop it to free it.
    """
    input_keys = {storage_key(t) for t in inputs if isinstance(t, torch.Tensor)}
    with SavedTensorsCounter() as counter:
        output = fn(*args, **kwargs)
    alive = {key: n for key, n in counter.saved.items() if counter._alive[key]() is not None}
    return {"held_bytes": sum(n for key, n in alive.items() if key not in input_keys),
            "saved_bytes": sum(n for key, n in counter.saved.items() if key not in input_keys),
            "packed_bytes": counter.packed_bytes,
            "input_bytes": sum(n for key, n in alive.items() if key in input_keys),
            "output": output}
