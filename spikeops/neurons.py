"""Compatibility alias: the neuron modules live in ``spikeops.nn.neurons``."""
from .nn.neurons import IF, LIF, PLIF, BaseNeuron

__all__ = ["BaseNeuron", "LIF", "IF", "PLIF"]
