"""Reference of the BatchNorm -> neuron operator: nn.functional.batch_norm over the flattened T*B batch,
then the neuron reference, with autograd doing the backward."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..neuron import naive as neuron_naive
from ..neuron.config import NeuronConfig


def batchnorm_neuron(x: torch.Tensor, v0: torch.Tensor, weight, bias, running_mean, running_var, training: bool,
                     momentum: float, eps: float, cfg: NeuronConfig, leak=None, store_v_seq: bool = False):
    """x [T, B, C, *] -> (spikes [T, B, C, *], v_last [B, C, *], v_seq or None). BatchNorm statistics over T*B
    and the spatial dims per channel C, running statistics updated in place as nn.BatchNorm does."""
    T = x.shape[0]
    if x.numel() == 0:
        # Nothing to normalise, and the statistics stay as they were (as nn.BatchNorm leaves them); its empty
        # path multiplies by weight[0], which a zero-channel input does not have.
        y = x.flatten(0, 1).clone()
    else:
        y = F.batch_norm(x.flatten(0, 1), running_mean, running_var, weight, bias, training, momentum, eps)
    return neuron_naive.multi_step(y.view(x.shape).reshape(T, -1), v0.reshape(-1), cfg, leak, store_v_seq)
