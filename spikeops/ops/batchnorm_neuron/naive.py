"""Reference of the BatchNorm -> neuron operator: nn.functional.batch_norm over the flattened T*B batch,
optionally a max-pool, then the neuron reference, with autograd doing the backward."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..neuron import naive as neuron_naive
from ..neuron.config import NeuronConfig


class BatchNormLayout:
    """How x [T, B, C, *] reaches ATen's batch norm so that its results do not depend on the thread count: with
    pixels as [T*B, C, *] (each channel reduced by one thread), without as [1, C, T*B]. ATen treats a contiguous
    [T*B, C] (or [T*B, C, 1, 1]) as channels-last and sums it in per-thread partial sums, which round
    differently on another thread count; as [1, C, T*B] each channel is one contiguous run summed in one order
    (a copy of x, freed after the call)."""

    def __init__(self, shape, pooled: bool = False):
        self.shape, self.channels = tuple(shape), shape[2]
        self.rows = math.prod(shape[3:]) == 1 and not pooled  # a max-pool needs the [T*B, C, H, W] layout

    def to(self, t: torch.Tensor) -> torch.Tensor:
        """x-shaped ``t`` in the kernel's layout."""
        if self.rows:
            return t.reshape(-1, self.channels).t().unsqueeze(0).contiguous()
        return t.reshape(-1, *self.shape[2:])

    def back(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor in the kernel's layout, in x's shape."""
        return (t[0].t() if self.rows else t).reshape(self.shape)


def batchnorm_neuron(x: torch.Tensor, v0: torch.Tensor, weight, bias, running_mean, running_var, training: bool,
                     momentum: float, eps: float, cfg: NeuronConfig, leak=None, store_v_seq: bool = False,
                     pool=None):
    """x [T, B, C, *] -> (spikes [T, B, C, *'], v_last [B, C, *'], v_seq or None). BatchNorm statistics over T*B
    and the spatial dims per channel C, running statistics updated in place as nn.BatchNorm does; ``pool``
    (kernel_size, stride, padding, dilation, ceil_mode) max-pools the normalised [T*B, C, H, W] first."""
    T = x.shape[0]
    if x.numel() == 0:
        # Nothing to normalise, and the statistics stay as they were (as nn.BatchNorm leaves them); its empty
        # path multiplies by weight[0], which a zero-channel input does not have.
        y = x.clone()
    else:
        layout = BatchNormLayout(x.shape, pooled=pool is not None)
        y = layout.back(F.batch_norm(layout.to(x), running_mean, running_var, weight, bias, training, momentum, eps))
    if pool is not None:
        y = F.max_pool2d(y.flatten(0, 1), *pool)
    return neuron_naive.multi_step(y.reshape(T, -1), v0.reshape(-1), cfg, leak, store_v_seq)
