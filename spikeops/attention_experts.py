"""Compatibility alias: ``EMSA`` and ``EMSP`` (SEMM) live in ``spikeops.nn.attention``."""
from .nn.attention import EMSA, EMSP
from .nn.common import positive_int as _positive_int  # noqa: F401

__all__ = ["EMSA", "EMSP"]
