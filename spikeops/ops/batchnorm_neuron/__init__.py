"""BatchNorm fused into the neuron that follows it: only BatchNorm's input is kept for backward."""
from .op import batchnorm_neuron

__all__ = ["batchnorm_neuron"]
