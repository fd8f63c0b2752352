"""BatchNorm fused into the neuron that follows it: only BatchNorm's input is kept for backward."""
from .op import batchnorm_neuron, pooled_shape

__all__ = ["batchnorm_neuron", "pooled_shape"]
