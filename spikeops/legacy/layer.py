"""``spikingjelly.clock_driven.layer``: the containers the spiking-transformer code bases use
(``SeqToANNContainer``, ``MultiStepContainer``) and the legacy dropouts, with legacy semantics. Other
legacy layers raise at construction, naming their SpikingJelly 2.0 replacement."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import unsupported
from .functional import multi_step_forward, seq_to_ann_forward

__all__ = ["SeqToANNContainer", "MultiStepContainer", "Dropout", "Dropout2d", "MultiStepDropout", "MultiStepDropout2d"]


class MultiStepContainer(nn.Sequential):
    """Runs single-step modules over every step of x_seq [T, *]."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return multi_step_forward(x_seq, self)


class SeqToANNContainer(nn.Sequential):
    """Runs stateless modules once on x_seq [T, B, ...] flattened to [T*B, ...], and restores [T, B, ...]."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return seq_to_ann_forward(x_seq, self)


class Dropout(nn.Module):
    """Legacy ``Dropout(p=0.5)``: one mask, drawn at the first call after ``reset()`` and kept for every step."""

    state_names = ("mask",)  # kept between calls (spikeops.nn.checkpointing restores it for a recompute)

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = p
        self.mask = None

    def reset(self):
        self.mask = None

    def extra_repr(self):
        return f"p={self.p}"

    def create_mask(self, x: torch.Tensor):
        self.mask = F.dropout(torch.ones_like(x.data), self.p, training=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self.mask is None:
            self.create_mask(x)
        return x * self.mask


class Dropout2d(Dropout):
    """Legacy ``Dropout2d(p=0.2)``: channel mask kept across steps."""

    def __init__(self, p: float = 0.2):
        super().__init__(p)

    def create_mask(self, x: torch.Tensor):
        self.mask = F.dropout2d(torch.ones_like(x.data), self.p, training=True)


class MultiStepDropout(Dropout):
    """Legacy ``MultiStepDropout(p=0.5)`` on x_seq [T, *]: one mask for all T steps."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x_seq
        if self.mask is None:
            self.create_mask(x_seq[0])
        return x_seq * self.mask


class MultiStepDropout2d(Dropout2d):
    """Legacy ``MultiStepDropout2d(p=0.5)`` on x_seq [T, B, C, H, W]."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    forward = MultiStepDropout.forward


_AB = "spikingjelly.activation_based.layer.{} (SpikingJelly 2.0; note its step_mode argument)"
for _name in ("NeuNorm", "DCT", "AXAT", "SynapseFilter", "ChannelsPool", "DropConnectLinear", "STDPLearner",
              "PrintShapeModule", "ConvBatchNorm2d", "ElementWiseRecurrentContainer", "LinearRecurrentContainer",
              "MultiStepThresholdDependentBatchNorm1d", "MultiStepThresholdDependentBatchNorm2d",
              "MultiStepThresholdDependentBatchNorm3d", "MultiStepTemporalWiseAttention"):
    globals()[_name] = unsupported("layer", _name, _AB.format(_name))
del _name
