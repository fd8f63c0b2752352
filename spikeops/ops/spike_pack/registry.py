"""Which tensors are spikes: a registry of the spike tensors the library's neurons returned.

``mark_spikes(t, kind, levels=None, norm=None)`` records that ``t`` holds spikes of that kind (the neuron
operators call it on the spikes they return). ``spike_info(u)`` recognises ``t`` and every view of it
(reshape, flatten, permute, transpose, slices: what conv / linear / matmul / pooling save) and returns the
kind, or None. It answers only when ``u`` is provably a view of a live marked tensor whose values have not
changed since the marking:

* the marked tensor's *base* (``t._base``, or ``t`` itself) is held by a weak reference; the entry dies with
  it, so a freed storage whose address is reused by another tensor is never mistaken for spikes;
* ``u`` must be that base or a view of it (``u._base is base``), of the same dtype and device;
* ``u``'s elements must lie inside the memory range of the marked tensor (a dense tensor, so every element
  of that range is a spike);
* ``u._version`` (the version counter every view shares with its base) must equal the version at marking:
  any in-place change through any view since then (``mul_``, ``copy_``, an optimizer step, ...) voids the mark.

In-place writes that bypass autograd's version counter (``t.data.mul_()``, writes through a ``.numpy()`` /
DLPack alias or from C++) are not seen, as autograd itself does not see them.

Marks are taken only while packing is on (``spike_pack.pack_spikes`` / a model with packing enabled), with
grad enabled, outside ``torch.compile`` tracing: elsewhere nothing is saved for backward and marking is a no-op.
"""
from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import torch

from .bits import FLOAT_DTYPES, check_kind

__all__ = ["SpikeInfo", "mark_spikes", "spike_info", "memory_range", "layout_of"]


class SpikeInfo(NamedTuple):
    kind: str                 # "binary", "ternary" or "integer"
    levels: int | None        # D for integer spikes
    norm: float | None        # integer spikes divided by norm


class _Mark(NamedTuple):
    lo: int                   # first storage element (in elements of dtype) of the marked tensor
    hi: int                   # last storage element, inclusive
    version: int
    dtype: torch.dtype
    device: torch.device
    info: SpikeInfo


class _Entry:
    """The marks on one base tensor, and the packed forms already made of its views (shared between the
    several operators that save the same view, e.g. the Q, K and V projections of one spike tensor)."""
    __slots__ = ("ref", "marks", "packed", "__weakref__")

    def __init__(self, ref):
        self.ref = ref
        self.marks: list[_Mark] = []
        self.packed: dict = {}


_registry: dict[int, _Entry] = {}   # id(base tensor) -> entry, removed when the base tensor dies
_recording = [lambda: False]        # set by hooks.py: whether marks are taken now


def _forget(key: int, ref) -> None:
    entry = _registry.get(key)
    if entry is not None and entry.ref is ref:
        del _registry[key]


def layout_of(t: torch.Tensor) -> str:
    """"dense" (the elements fill one memory range: contiguous or a permutation of it), "gappy" (no element
    shares memory with another, with holes in between: a slice) or "overlap" (expanded / unknown)."""
    dims = sorted((stride, size) for size, stride in zip(t.shape, t.stride()) if size != 1)
    expected, dense = 1, True
    for stride, size in dims:
        if stride < expected:
            return "overlap"
        if stride != expected:
            dense = False
        expected = stride * size
    return "dense" if dense else "gappy"


def memory_range(t: torch.Tensor) -> tuple[int, int]:
    """First and last storage element (inclusive) that ``t`` addresses; ``t`` non-empty."""
    lo = t.storage_offset()
    return lo, lo + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


def _base_of(t: torch.Tensor) -> torch.Tensor:
    base = t._base
    return t if base is None else base


def mark_spikes(tensor: torch.Tensor, kind: str, levels: int | None = None, *, norm: float | None = None):
    """Records ``tensor`` (and so every view of it) as spikes of ``kind`` ("binary" {0, 1}; "ternary"
    {-1, 0, 1}; "integer" 0..``levels``, divided by ``norm`` when given); returns ``tensor``.

    The caller guarantees the values: only the library's neurons (and operators whose output values are a
    subset of their spike input's, such as max-pooling) call it. A no-op when packing is off, grad is
    disabled, under ``torch.compile`` tracing, for an empty, non-floating, inference-mode or not-dense tensor.
    """
    info = SpikeInfo(*check_kind(kind, levels, norm))
    if not _recording[0]() or not isinstance(tensor, torch.Tensor) or tensor.dtype not in FLOAT_DTYPES \
            or tensor.numel() == 0 or tensor.is_inference() or tensor.layout != torch.strided \
            or layout_of(tensor) != "dense":
        return tensor
    base = _base_of(tensor)
    key = id(base)
    entry = _registry.get(key)
    if entry is None or entry.ref() is not base:
        entry = _Entry(None)
        entry.ref = weakref.ref(base, functools.partial(_forget, key))
        _registry[key] = entry
    lo, hi = memory_range(tensor)
    mark = _Mark(lo, hi, tensor._version, tensor.dtype, tensor.device, info)
    if mark not in entry.marks:
        entry.marks.append(mark)
    return tensor


def lookup(t) -> tuple[_Entry, SpikeInfo] | None:
    """(entry, info) when ``t`` is provably a view of a live marked spike tensor, else None."""
    if not _registry or not isinstance(t, torch.Tensor):
        return None
    base = _base_of(t)
    entry = _registry.get(id(base))
    if entry is None or entry.ref() is not base or t.numel() == 0 or t.layout != torch.strided \
            or t.is_inference():
        return None
    version = t._version
    lo, hi = memory_range(t)
    for mark in entry.marks:
        if mark.version == version and mark.dtype == t.dtype and mark.device == t.device \
                and mark.lo <= lo and hi <= mark.hi:
            return entry, mark.info
    return None


def spike_info(t) -> SpikeInfo | None:
    """The kind of spikes ``t`` holds when it is provably (a view of) a live marked spike tensor, else None."""
    found = lookup(t)
    return None if found is None else found[1]


def clear() -> None:
    """Forgets every mark (tests)."""
    _registry.clear()
