"""``neuron(BatchNorm(x))`` with BatchNorm fused into the neuron (spikeops/ops/batchnorm_neuron): backward
keeps BatchNorm's input and its per-channel statistics, not the normalised tensor the neuron would keep.

``batchnorm_then_neuron(bn, neuron, x)`` takes the modules as they are (their parameters, buffers and
names unchanged, so checkpoints load as before) and falls back to ``neuron(bn(x))`` where the pair cannot
be fused exactly: a BatchNorm subclass, or a neuron whose forward does not take ``batchnorm=`` (declared by
``fuses_batchnorm = True``; neurons of other libraries, single-step neurons).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["batchnorm_then_neuron", "batchnorm_arguments"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_arguments(bn: nn.Module) -> dict:
    """The keyword arguments of spikeops.ops.batchnorm_neuron that make it compute what ``bn`` computes in
    its current mode, running-statistics update included (nn.BatchNorm.forward's rules)."""
    tracking = bn.training and bn.track_running_stats
    use_batch_statistics = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    return dict(weight=bn.weight, bias=bn.bias, running_mean=bn.running_mean if use_running else None,
                running_var=bn.running_var if use_running else None, training=use_batch_statistics,
                momentum=bn.momentum, eps=bn.eps, num_batches_tracked=bn.num_batches_tracked if tracking else None)


def fusable(bn: nn.Module, neuron: nn.Module) -> bool:
    """An exact nn.BatchNorm*d in front of a spikeops neuron whose forward takes ``batchnorm=``."""
    return type(bn) in _BATCHNORMS and getattr(neuron, "fuses_batchnorm", False)


def batchnorm_then_neuron(bn: nn.Module, neuron: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``neuron(bn(x))`` for time-major ``x`` [T, B, C, *], ``bn`` normalising over the flattened T*B batch.
    The fused call still goes through the neuron module (its hooks see it, with the BatchNorm's input)."""
    if fusable(bn, neuron) and x.dim() >= 3:
        return neuron(x, batchnorm=batchnorm_arguments(bn))
    return neuron(bn(x.flatten(0, 1)).view(x.shape))
