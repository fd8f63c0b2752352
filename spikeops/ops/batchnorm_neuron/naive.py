"""Reference of the BatchNorm -> neuron operator: nn.functional.batch_norm over the flattened T*B batch,
optionally a max-pool, then the neuron reference, with autograd doing the backward."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..neuron import naive as neuron_naive
from ..neuron.config import NeuronConfig


def batchnorm_neuron(x: torch.Tensor, v0: torch.Tensor, weight, bias, running_mean, running_var, training: bool,
                     momentum: float, eps: float, cfg: NeuronConfig, leak=None, store_v_seq: bool = False,
                     pool=None):
    """x [T, B, C, *] -> (spikes [T, B, C, *'], v_last [B, C, *'], v_seq or None). BatchNorm statistics over T*B
    and the spatial dims per channel C, running statistics updated in place as nn.BatchNorm does; ``pool``
    (kernel_size, stride, padding, dilation, ceil_mode) max-pools the normalised [T*B, C, H, W] first."""
    T = x.shape[0]
    y = F.batch_norm(x.flatten(0, 1), running_mean, running_var, weight, bias, training, momentum, eps)
    if pool is not None:
        y = F.max_pool2d(y, *pool)
    return neuron_naive.multi_step(y.reshape(T, -1), v0.reshape(-1), cfg, leak, store_v_seq)
