"""spikeops: fused multi-step spiking-neuron and spiking-attention operators for PyTorch.

Every operator runs on four backends behind one API: "torch" (pure-PyTorch reference), "cpu"
(fused C++), "cuda" (CUDA C++) and "triton"; "auto" picks the fastest available one.
"""
from . import backends, functional, surrogate
from .backends import available_backends
from .neurons import IF, LIF, PLIF, BaseNeuron

__all__ = ["LIF", "IF", "PLIF", "BaseNeuron", "functional", "surrogate", "backends", "available_backends"]
__version__ = "0.1.0"
