"""Compatibility alias: the attention blocks live in ``spikeops.nn.attention`` (one family, see there)."""
from .nn.attention import ChannelQKAttention, SpikeDrivenSelfAttention, SpikingSelfAttention, TokenQKAttention
from .nn.attention import SpikingBlock as _SpikingAttentionBase  # noqa: F401  (the old private base)
from .nn.attention import _check_input, _QKAttention  # noqa: F401
from .nn.common import check_heads as _check_dim  # noqa: F401
from .nn.neurons import official_lif as _lif  # noqa: F401

__all__ = ["TokenQKAttention", "ChannelQKAttention", "SpikingSelfAttention", "SpikeDrivenSelfAttention"]
