"""Building blocks shared by the reference backbones.

Tensors are time-major, [T, B, ...]. Convolutions and batch norms run on ``x.flatten(0, 1)`` (T·B
samples), as in every official spiking-transformer code base; only the neurons are recurrent in time.

Neurons here are stateless modules: each forward starts from v = 0 and returns spikes only, so a
model needs no ``reset_net`` between batches and works unchanged under DDP and ``torch.compile``.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import functional
from ..backends import BACKENDS

__all__ = ["LIFNeuron", "ConvBN", "SpikingMLP", "set_backend", "neurons_of", "check_backend", "to_time_major", "count_parameters"]

# The models' shared neuron: SpikingJelly MultiStepLIFNode(tau=2.0, detach_reset=True) with the default
# Sigmoid(alpha=4) surrogate and hard reset to 0 (SPEC.md §0).
LIF_TAU = 2.0


def check_backend(backend: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return backend


class LIFNeuron(nn.Module):
    """Multi-step LIF over the leading dimension of its input, which it treats as time."""

    def __init__(self, v_threshold: float = 1.0, backend: str = "auto"):
        super().__init__()
        self.v_threshold = v_threshold
        self.backend = check_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes, _, _ = functional.lif(x, tau=LIF_TAU, v_threshold=self.v_threshold, detach_reset=True,
                                      backend=self.backend)
        return spikes

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}, backend={self.backend}"


def neurons_of(model: nn.Module):
    """Every neuron module of ``model`` (anything with a ``backend`` attribute that fires spikes)."""
    return [m for m in model.modules() if hasattr(m, "backend") and isinstance(m, nn.Module)]


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switches every spikeops call inside ``model`` to ``backend`` (weights untouched)."""
    check_backend(backend)
    for module in neurons_of(model):
        module.backend = backend
    return model


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
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = self.bn(self.conv(x.flatten(0, 1)))
        if self.pool is not None:
            y = self.pool(y)
        return y.reshape(T, B, *y.shape[1:])


class SpikingMLP(nn.Module):
    """Conv1x1-BN-LIF, Conv1x1-BN-LIF (QKFormer, Spikformer ImageNet MLP; SPEC.md §1 "Block")."""

    def __init__(self, dim: int, hidden_dim: int, backend: str = "auto"):
        super().__init__()
        self.fc1 = ConvBN(dim, hidden_dim, bias=True)
        self.fc1_lif = LIFNeuron(backend=backend)
        self.fc2 = ConvBN(hidden_dim, dim, bias=True)
        self.fc2_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2_lif(self.fc2(self.fc1_lif(self.fc1(x))))


def to_time_major(x: torch.Tensor, T: int) -> torch.Tensor:
    """A static image batch [B, C, H, W] repeated T times, or a sequence [T, B, C, H, W] as given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4:
        return x.unsqueeze(0).expand(T, *x.shape).contiguous()
    if x.dim() == 5:
        if x.shape[0] != T:
            raise ValueError(f"x: a sequence input must have T={T} steps in dim 0, got shape {tuple(x.shape)}")
        return x
    raise ValueError(f"x: expected an image batch [B, C, H, W] or a sequence [T, B, C, H, W], got shape "
                     f"{tuple(x.shape)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
