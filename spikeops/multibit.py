"""Compatibility alias: the multi-bit and signed neurons. Functional forms and the integer <-> binary spike
conversions live in ``spikeops.ops.multibit``, the modules and ``fold_mprf`` in ``spikeops.nn.multibit``."""
from .nn.multibit import MPRF, BipolarLIF, IELIF, Multispike, fold_mprf
from .ops.multibit import (MAX_LEVELS, ROUNDING_MODES, bipolar_lif, collapse_to_integer, expand_to_binary, ielif,
                           multispike)
from .ops.multibit import bipolar_config as _bipolar_config
from .ops.multibit import check_integer_spikes as _check_integer_spikes
from .ops.multibit import check_levels as _check_levels
from .ops.multibit import check_norm as _check_norm
from .ops.multibit import check_rounding as _check_rounding
from .ops.multibit import integer_config as _integer_config
from .ops.multibit import normalise as _normalise

__all__ = [
    "ielif", "multispike", "bipolar_lif", "expand_to_binary", "collapse_to_integer", "fold_mprf",
    "IELIF", "Multispike", "BipolarLIF", "MPRF",
]
