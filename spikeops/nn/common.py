"""Helpers shared by the module layer: argument checks of the blocks and the Conv-BN layer of the backbones."""
from __future__ import annotations

import math

import torch
from torch import nn

from .batchnorm_fusion import batchnorm_then_neuron
from .packing import SpikeMaxPool2d

__all__ = ["ConvBN", "check_heads", "check_finite", "check_block_input", "positive_int"]


def check_heads(dim: int, num_heads: int) -> None:
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or dim % num_heads != 0:
        raise ValueError(f"num_heads: must divide dim={dim!r}, got num_heads={num_heads}")


def check_finite(name: str, value) -> None:
    """Hyper-parameters used only inside forward are checked at construction, before any neuron runs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")


def check_block_input(x, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[2] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a [T, B, C={dim}, H, W] tensor, got {shape}")


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class ConvBN(nn.Module):
    """Conv (1d or 2d) then BatchNorm, then optionally a 3x3/stride-2 max-pool, on [T, B, C, ...] input.

    ``conv``/``bn`` keep the official repositories' tensor shapes so their checkpoints load by renaming only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, *, stride: int = 1,
                 bias: bool = False, dims: int = 2, pool: bool = False):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)
        self.bn = norm(out_channels)
        # Unfused (no neuron given), the pool keeps the BatchNorm output, not int64 indices: backward recomputes
        # them exactly. With a neuron it runs inside the fused BatchNorm -> neuron operator.
        self.pool = SpikeMaxPool2d(kernel_size=3, stride=2, padding=1, recompute_indices=True) if pool else None

    def forward(self, x: torch.Tensor, neuron: nn.Module | None = None) -> torch.Tensor:
        """BN(Conv(x)), pooled if so built; with ``neuron``, ``neuron`` of that, BatchNorm (and pool) fused into
        the neuron (spikeops.nn.batchnorm_fusion): backward keeps the conv output alone."""
        T, B = x.shape[:2]
        y = self.conv(x.flatten(0, 1))
        if neuron is not None:
            return batchnorm_then_neuron(self.bn, neuron, y.view(T, B, *y.shape[1:]), self.pool)
        y = self.bn(y)
        if self.pool is not None:
            y = self.pool(y)
        return y.reshape(T, B, *y.shape[1:])
