"""Spikes kept as bits (issue 15, part 1): exact bit packing of spike tensors, the registry of tensors the
library's neurons produced as spikes, the saved-tensor hooks that keep those tensors as bits while autograd
holds them, and a max-pool that keeps no indices. Module-level switches: ``spikeops.nn.packing``; the
design: docs/memory.md.

* ``mark_spikes(t, kind, levels=None, norm=None)``: called by the neuron operators on the spikes they return;
  ``mark_neuron_spikes(t, cfg)`` does it from a ``NeuronConfig``; ``spike_info(t)`` recognises marked tensors
  and their views.
* ``add_spikes(a, b)``: ``a + b``, marked as integer spikes when both are marked spike counts (residual streams).
* ``mark_gated_spikes(out, gate)``: marks ``out = spike mask * gate`` as spikes of ``gate``'s kind.
* ``pack_spikes(enabled=True)``: context manager, packing on (or off) inside.
* ``spike_max_pool2d``: ``F.max_pool2d`` without saved indices for spike input.
* ``SavedTensorsCounter``: the bytes autograd holds for backward, packed spikes at their packed size.
* ``pack_values`` / ``unpack_values`` / ``bits_per_spike``: the bit format (``bits.py``); ``naive``: its reference.
"""
from __future__ import annotations

import torch

from ..neuron.table import FIRE_BINARY, FIRE_BIPOLAR, FIRE_INTEGER
from .bits import FLOAT_DTYPES, KINDS, MAX_LEVELS, bits_per_spike, pack_values, unpack_values
from .hooks import (PackedSpikes, SavedTensorsCounter, enter, exit, is_enabled, marking_active, pack, pack_spikes,
                    packing_active, packing_wanted, set_enabled, storage_key)
from .pool import spike_max_pool2d
from .registry import SpikeInfo, mark_spikes, spike_info

__all__ = ["KINDS", "FLOAT_DTYPES", "bits_per_spike", "pack_values", "unpack_values", "SpikeInfo", "mark_spikes",
           "mark_neuron_spikes", "mark_gated_spikes", "add_spikes", "spike_info", "PackedSpikes", "pack",
           "pack_spikes", "packing_active", "packing_wanted", "marking_active", "enter", "exit", "set_enabled",
           "is_enabled", "SavedTensorsCounter", "storage_key", "spike_max_pool2d"]

_FIRE_KINDS = {FIRE_BINARY: "binary", FIRE_BIPOLAR: "ternary", FIRE_INTEGER: "integer"}


def mark_neuron_spikes(spikes, cfg):
    """``mark_spikes`` for the spikes a neuron with ``NeuronConfig`` ``cfg`` returned (binary, bipolar or
    integer fire mode, ``cfg.levels`` for the latter); returns ``spikes``."""
    if not marking_active():
        return spikes
    kind = _FIRE_KINDS[cfg.fire_mode]
    return mark_spikes(spikes, kind, cfg.levels if kind == "integer" else None)


def _largest_count(info: SpikeInfo | None) -> int | None:
    """The largest value of a spike tensor holding non-negative integers (binary, or undivided integer
    spikes), None for other spikes (ternary, divided) or a tensor that is not marked."""
    if info is None or info.kind == "ternary" or info.norm is not None:
        return None
    return 1 if info.kind == "binary" else info.levels


def add_spikes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b``. Where both are marked spike counts (binary, or integer 0..D undivided), the sum holds the
    integers 0..Da+Db, exact in every float dtype up to MAX_LEVELS (255), and is marked as such: a SEW-style
    residual stream (QKFormer's ``x + Attn(x)``) is then saved as ⌈log2(D + 1)⌉ bits, not 32, by the
    convolutions that read it."""
    out = a + b
    if marking_active():
        da, db = _largest_count(spike_info(a)), _largest_count(spike_info(b))
        if da is not None and db is not None and da + db <= MAX_LEVELS:
            mark_spikes(out, "integer", da + db)
    return out


def mark_gated_spikes(out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Marks ``out``, the product of a binary spike mask and ``gate`` (Q-K attention, spike-driven attention),
    as spikes of ``gate``'s kind when ``gate`` is marked: its values are ``gate``'s or 0. Ternary gates are
    left unmarked: -1 * 0 is -0.0, which bits would rebuild as +0.0. Returns ``out``."""
    info = spike_info(gate) if marking_active() else None
    if info is not None and info.kind != "ternary":
        mark_spikes(out, info.kind, info.levels, norm=info.norm)
    return out
