"""Compatibility alias: ``BipolarSelfAttention`` lives in ``spikeops.nn.attention``, the shared checks in
``spikeops.nn.common``."""
from .nn.attention import BipolarSelfAttention, SpikingBlock
from .nn.common import check_block_input, check_finite, check_heads
from .nn.neurons import official_lif as lif

__all__ = ["BipolarSelfAttention"]
