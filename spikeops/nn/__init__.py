"""The module layer of spikeops: neuron modules and spiking-attention blocks, built on ``spikeops.ops``.

* ``neurons``: ``BaseNeuron``, ``LIF``, ``IF``, ``PLIF`` (stateful, SpikingJelly's arguments), ``LIFNeuron``
  (stateless) and ``official_lif``, the one factory of the official models' LIF.
* ``multibit``: ``IELIF``, ``Multispike``, ``BipolarLIF``, ``MPRF`` and ``fold_mprf``.
* ``attention``: the one family of attention blocks (``SpikingBlock`` and its blocks), each with a
  ``stateless`` option.
* ``stateless``: ``StatelessNeuron`` / ``make_stateless``; ``common``: shared checks and ``ConvBN``.

Layers: kernels -> ``spikeops.ops`` -> ``spikeops.nn`` -> ``spikeops.models`` -> tools (``energy``,
``convert``); each imports only from below (tests/test_layering.py).
"""
from .attention import (EMSA, EMSP, BipolarSelfAttention, ChannelQKAttention, SpikeDrivenSelfAttention, SpikingBlock,
                        SpikingSelfAttention, TokenQKAttention)
from .checkpointing import checkpointed_blocks, full_memory, minimum_memory
from .common import ConvBN
from .multibit import MPRF, BipolarLIF, IELIF, Multispike, fold_mprf
from .neurons import IF, LIF, PLIF, BaseNeuron, LIFNeuron, official_lif
from .packing import (PackSpikes, SpikeMaxPool2d, disable_spike_packing, enable_spike_packing, held_for_backward,
                      spike_packing_enabled, use_spike_max_pool)
from .stateless import StatelessNeuron, make_stateless

__all__ = ["BaseNeuron", "LIF", "IF", "PLIF", "LIFNeuron", "official_lif", "IELIF", "BipolarLIF", "Multispike", "MPRF",
           "fold_mprf", "SpikingBlock", "TokenQKAttention", "ChannelQKAttention", "SpikingSelfAttention",
           "SpikeDrivenSelfAttention", "BipolarSelfAttention", "EMSA", "EMSP", "ConvBN", "StatelessNeuron",
           "make_stateless", "PackSpikes", "SpikeMaxPool2d", "enable_spike_packing", "disable_spike_packing",
           "spike_packing_enabled", "use_spike_max_pool", "held_for_backward", "minimum_memory", "full_memory",
           "checkpointed_blocks"]
