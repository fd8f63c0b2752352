"""Spikes kept as bits while autograd holds them: ``torch.autograd.graph.saved_tensors_hooks`` that store every
saved tensor which is (a view of) a marked spike tensor (``registry.py``) as bit planes (``bits.py``), and
rebuild it only when backward asks for it.

* ``pack_spikes(enabled=True, verify=False)``: context manager; on, saved spikes are packed; ``False`` turns
  packing off inside, even for models that enable it.
* ``enter()`` / ``exit()``: the same as a pair of calls, for module forward hooks (``spikeops.nn.packing``).
* ``ParameterCast``: a saved dtype cast of a leaf (autocast's bfloat16 copy of a weight), kept as the leaf and
  cast again in backward.
* ``SavedTensorsCounter``: counts the bytes autograd holds for backward (each storage once, packed spikes at
  their packed size, a parameter's cast at none: the parameter is the caller's) and composes with packing, so a measurement sees what training holds.
* ``set_enabled(False)`` (or the environment variable ``SPIKEOPS_PACK_SPIKES=0``): packing off everywhere.

One hook pair serves packing and counting. It is pushed on autograd's stack of default hooks only when
that stack is empty or already has it on top: when someone else's hooks are active (activation
checkpointing, ``save_on_cpu``, a profiler), packing steps aside and theirs apply unchanged. Nothing is
pushed while ``torch.compile`` traces.

A packed tensor is rebuilt with the values, dtype, device, shape and strides of the tensor that was saved
(a dense view: its memory range, rebuilt with ``as_strided``; a slice with holes: copied into
``empty_strided``), so backward kernels see the layout they would have seen.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
import weakref

import torch

from . import registry
from .bits import pack_values, unpack_values
from .registry import SpikeInfo, layout_of, lookup, memory_range

__all__ = ["PackedSpikes", "ParameterCast", "pack", "pack_spikes", "enter", "exit", "packing_active", "packing_wanted",
           "marking_active", "set_enabled", "is_enabled",
           "SavedTensorsCounter"]

_enabled = os.environ.get("SPIKEOPS_PACK_SPIKES", "1").strip().lower() not in ("0", "false", "off", "no")


class _State(threading.local):
    def __init__(self):
        self.on = 0           # active requests to pack (contexts, models' forward hooks)
        self.off = 0          # active pack_spikes(False) contexts
        self.verify = 0
        self.tokens = []      # per enter(): whether it pushed the hook pair
        self.counters = []    # active SavedTensorsCounters


_state = _State()


def set_enabled(enabled: bool) -> None:
    """Packing on (default) or off for the whole process; ``SPIKEOPS_PACK_SPIKES=0`` starts it off."""
    global _enabled
    _enabled = bool(enabled)


def is_enabled() -> bool:
    return _enabled


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def packing_wanted() -> bool:
    """Whether packing is asked for now (a context or a model's hooks), whoever's saved-tensor hooks are on top."""
    return not _compiling() and _enabled and _state.on > 0 and not _state.off and torch.is_grad_enabled()


def packing_active() -> bool:
    """Whether tensors saved now that are marked spikes get packed."""
    return packing_wanted() and _hooks_on_top()


def marking_active() -> bool:
    """Whether neurons' spikes are marked now: while packing is active, and inside an activation checkpoint
    (spikeops.nn.checkpointing) run while packing is wanted, whose blocks' inputs and outputs are saved under
    our hooks."""
    return packing_wanted() and (_hooks_on_top() or _checkpoint_on_top())


registry._recording[0] = marking_active


# ---------------------------------------------------------------- the packed form
class PackedSpikes:
    """A saved spike tensor as bit planes, plus what it takes to rebuild it exactly."""
    __slots__ = ("planes", "numel", "shape", "stride", "gappy", "dtype", "info", "__weakref__")

    def __init__(self, t: torch.Tensor, info: SpikeInfo, layout: str):
        self.numel, self.shape, self.stride, self.dtype, self.info = t.numel(), t.shape, t.stride(), t.dtype, info
        self.gappy = layout == "gappy"
        if self.gappy:
            values = t                  # packed in logical order
        else:                           # the dense memory range, in memory order: a 1-D view, no copy
            values = t.as_strided((t.numel(),), (1,), t.storage_offset())
        self.planes = pack_values(values, info.kind, info.levels, info.norm)

    @property
    def nbytes(self) -> int:
        return self.planes.numel()

    def unpack(self) -> torch.Tensor:
        flat = unpack_values(self.planes, self.numel, self.dtype, self.info.kind, self.info.norm)
        if not self.gappy:
            return flat.as_strided(self.shape, self.stride, 0)
        out = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=flat.device)
        return out.copy_(flat.view(self.shape))

    def __repr__(self):
        return (f"PackedSpikes({self.info.kind}, shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"{self.nbytes} bytes)")


def pack(t: torch.Tensor, verify: bool = False):
    """``PackedSpikes`` of ``t`` when it is (a view of) a live marked spike tensor, else None. The packed forms
    of one view are shared (several operators saving the same spikes keep one copy)."""
    found = lookup(t)
    if found is None:
        return None
    entry, info = found
    layout = layout_of(t)
    if layout == "overlap":
        return None
    key = (memory_range(t), tuple(t.shape), t.stride(), t._version, t.dtype)
    ref = entry.packed.get(key)
    packed = None if ref is None else ref()
    if packed is None:
        packed = PackedSpikes(t, info, layout)
        if verify and not torch.equal(packed.unpack(), t):
            warnings.warn(f"spikeops: a tensor marked as {info.kind} spikes holds other values; it is kept "
                          "unpacked (a marking bug)", RuntimeWarning, stacklevel=2)
            return None
        entry.packed[key] = weakref.ref(packed)
    return packed


# ---------------------------------------------------------------- parameters' casts
class ParameterCast:
    """A saved tensor that is a dtype cast of a leaf tensor (autocast's bfloat16 copy of a conv or linear
    weight): kept as the leaf, which its owner holds anyway, and cast again when backward asks for it. The
    same cast of the same values gives the same bits, so backward sees what it would have seen."""
    __slots__ = ("leaf", "version", "dtype", "__weakref__")

    def __init__(self, leaf: torch.Tensor, dtype: torch.dtype):
        self.leaf, self.version, self.dtype = leaf, leaf._version, dtype

    def unpack(self) -> torch.Tensor:
        if self.leaf._version != self.version:
            # The copy autograd would have kept does not follow the leaf: refuse rather than differ from it.
            raise RuntimeError(f"spikeops: a tensor of shape {tuple(self.leaf.shape)} whose {self.dtype} cast was "
                               "saved for backward was modified in place before backward (an optimizer step "
                               "between forward and backward?); its gradient cannot be computed")
        with torch.no_grad():
            return self.leaf.to(self.dtype)


def parameter_cast(t: torch.Tensor) -> ParameterCast | None:
    """``ParameterCast`` of ``t`` when ``t`` is an unchanged dtype cast (same device, shape and strides) of a leaf
    that requires grad, as autocast makes of parameters; else None. The values are compared once: a cast of a
    leaf changed in place in between, under no_grad, is kept as it is."""
    node = t.grad_fn
    if node is None or type(node).__name__ != "ToCopyBackward0" or t._version != 0 or t.layout != torch.strided:
        return None
    leaf = getattr(node.next_functions[0][0], "variable", None)
    if leaf is None or leaf.dtype == t.dtype or leaf.device != t.device or leaf.shape != t.shape \
            or leaf.stride() != t.stride():
        return None
    with torch.no_grad():
        if not torch.equal(leaf.to(t.dtype), t):
            return None
    return ParameterCast(leaf, t.dtype)


# ---------------------------------------------------------------- the hook pair
def _pack_hook(t):
    out = t
    if _state.on and not _state.off and _enabled:
        packed = pack(t, verify=_state.verify > 0) if registry._registry else None
        if packed is None:
            packed = parameter_cast(t)
        if packed is not None:
            out = packed
    if out is t and t.grad_fn is not None:
        # Saved as it is, a tensor would hold its grad_fn: for an output of the saving node (an operator that
        # saves its own outputs) that is a reference cycle through C++, which keeps the whole graph alive when
        # no backward runs (a training-mode forward under no backward). Autograd restores the graph metadata of
        # a saved tensor itself, so the detached alias (same storage) is all the hooks need to keep.
        out = t.detach()
    for counter in _state.counters:
        counter._record(t, out)
    return out


def _unpack_hook(saved):
    return saved.unpack() if isinstance(saved, (PackedSpikes, ParameterCast)) else saved


def _hooks_on_top() -> bool:
    top = torch._C._autograd._top_saved_tensors_default_hooks(False)
    return top is not None and top[0] is _pack_hook


def _checkpoint_on_top() -> bool:
    top = torch._C._autograd._top_saved_tensors_default_hooks(False)
    return top is not None and getattr(top[0], "_checkpoint_internal", False)


def _push_if_possible(force: bool) -> bool:
    """Pushes the hook pair unless it is on top already; with someone else's hooks on top, only when
    ``force`` (counting). Returns whether it pushed."""
    if _compiling() or not torch._C._autograd._saved_tensors_hooks_is_enabled():
        return False
    top = torch._C._autograd._top_saved_tensors_default_hooks(False)
    if top is not None and (top[0] is _pack_hook or not force):
        return False
    torch._C._autograd._push_saved_tensors_default_hooks(_pack_hook, _unpack_hook)
    return True


def enter(verify: bool = False) -> None:
    """Packing on until the matching ``exit()`` (same thread, nested in LIFO order)."""
    _state.tokens.append(_push_if_possible(force=False))
    _state.on += 1
    _state.verify += bool(verify)
    _state.tokens.append(bool(verify))


def exit() -> None:  # noqa: A001  (pairs with enter)
    verify = _state.tokens.pop()
    pushed = _state.tokens.pop()
    _state.verify -= verify
    _state.on -= 1
    if pushed:
        torch._C._autograd._pop_saved_tensors_default_hooks()


@contextlib.contextmanager
def pack_spikes(enabled: bool = True, *, verify: bool = False):
    """While active, every tensor autograd saves that is (a view of) a spike tensor a spikeops neuron
    returned is kept as bits, and rebuilt exactly in backward. ``enabled=False`` turns packing off inside
    (also for models that enable it themselves). ``verify=True`` checks every packing by unpacking it (a
    debugging aid: one extra pass and a device sync per saved spike tensor)."""
    if not enabled:
        _state.off += 1
        try:
            yield
        finally:
            _state.off -= 1
        return
    enter(verify)
    try:
        yield
    finally:
        exit()


# ---------------------------------------------------------------- counting
def storage_key(t: torch.Tensor) -> tuple:
    """(device, address, bytes) of ``t``'s storage: one key for every view of it."""
    storage = t.untyped_storage()
    return t.device, storage.data_ptr(), storage.nbytes()


class SavedTensorsCounter:
    """Context manager counting what autograd saves for backward while active: every storage once (by device,
    address and size, as ``benchmarks/conftest.py`` does), a packed spike tensor at its packed size.

    ``saved`` maps a key (``(device, data_ptr, nbytes)`` for a tensor's storage, ``("packed", id)`` for a
    packed one) to its bytes; ``saved_bytes`` sums it; ``held_bytes()`` sums only what is still alive
    (what the autograd graph holds, once forward's temporaries are gone); ``packed_bytes`` the packed part.
    It composes with packing: a model that packs its spikes is measured packed.
    """

    def __init__(self):
        self.saved: dict = {}
        self._alive: dict = {}
        self._pushed = False

    def __enter__(self):
        self._pushed = _push_if_possible(force=True)
        _state.counters.append(self)
        return self

    def __exit__(self, *exc):
        _state.counters.remove(self)
        if self._pushed:
            torch._C._autograd._pop_saved_tensors_default_hooks()
        return False

    def _record(self, t, out):
        if isinstance(out, PackedSpikes):
            key, nbytes, ref = ("packed", id(out)), out.nbytes, weakref.ref(out)
        elif isinstance(out, torch.Tensor):
            try:
                key = storage_key(out)
            except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts: not counted
                return
            storage, nbytes = out.untyped_storage(), key[2]
            try:
                ref = weakref.ref(storage)
            except TypeError:
                ref = None
        else:
            return
        old = self._alive.get(key)
        if old is not None:
            if old() is not None:
                return                  # this storage is counted already
            # freed since, and its address reused: keep the old one's bytes under a key of its own
            moved = key + (len(self.saved),)
            self.saved[moved], self._alive[moved] = self.saved.pop(key), self._alive.pop(key)
        self.saved[key] = nbytes
        self._alive[key] = ref if ref is not None else (lambda: True)

    @property
    def saved_bytes(self) -> int:
        return sum(self.saved.values())

    @property
    def packed_bytes(self) -> int:
        return sum(n for key, n in self.saved.items() if key[0] == "packed" and self._alive[key]() is not None)

    def held_bytes(self) -> int:
        return sum(n for key, n in self.saved.items() if self._alive[key]() is not None)
