"""Spikes kept as bits (issue 15, part 1): exact bit packing of spike tensors, the registry of tensors the
library's neurons produced as spikes, the saved-tensor hooks that keep those tensors as bits while autograd
holds them, and a max-pool that keeps no indices. Module-level switches: ``spikeops.nn.packing``; the
design: docs/memory.md.

* ``mark_spikes(t, kind, levels=None, norm=None)``: called by the neuron operators on the spikes they return;
  ``mark_neuron_spikes(t, cfg)`` does it from a ``NeuronConfig``; ``spike_info(t)`` recognises marked tensors
  and their views.
* ``pack_spikes(enabled=True)``: context manager, packing on (or off) inside.
* ``spike_max_pool2d``: ``F.max_pool2d`` without saved indices for spike input.
* ``SavedTensorsCounter``: the bytes autograd holds for backward, packed spikes at their packed size.
* ``pack_values`` / ``unpack_values`` / ``bits_per_spike``: the bit format (``bits.py``); ``naive``: its reference.
"""
from __future__ import annotations

from ..neuron.table import FIRE_BINARY, FIRE_BIPOLAR, FIRE_INTEGER
from .bits import FLOAT_DTYPES, KINDS, bits_per_spike, pack_values, unpack_values
from .hooks import (PackedSpikes, SavedTensorsCounter, enter, exit, is_enabled, marking_active, pack, pack_spikes,
                    packing_active, packing_wanted, set_enabled)
from .pool import spike_max_pool2d
from .registry import SpikeInfo, mark_spikes, spike_info

__all__ = ["KINDS", "FLOAT_DTYPES", "bits_per_spike", "pack_values", "unpack_values", "SpikeInfo", "mark_spikes",
           "mark_neuron_spikes", "spike_info", "PackedSpikes", "pack", "pack_spikes", "packing_active",
           "packing_wanted", "marking_active", "enter",
           "exit", "set_enabled", "is_enabled", "SavedTensorsCounter", "spike_max_pool2d"]

_FIRE_KINDS = {FIRE_BINARY: "binary", FIRE_BIPOLAR: "ternary", FIRE_INTEGER: "integer"}


def mark_neuron_spikes(spikes, cfg):
    """``mark_spikes`` for the spikes a neuron with ``NeuronConfig`` ``cfg`` returned (binary, bipolar or
    integer fire mode, ``cfg.levels`` for the latter); returns ``spikes``."""
    if not marking_active():
        return spikes
    kind = _FIRE_KINDS[cfg.fire_mode]
    return mark_spikes(spikes, kind, cfg.levels if kind == "integer" else None)
