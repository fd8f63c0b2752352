"""Compatibility alias: ``StatelessNeuron`` / ``make_stateless`` live in ``spikeops.nn.stateless`` (the
attention blocks take ``stateless=True`` instead)."""
from ..nn.stateless import StatelessNeuron, make_stateless

__all__ = ["StatelessNeuron", "make_stateless"]
