"""Building blocks shared by the reference backbones.

Tensors are time-major, [T, B, ...]. Convolutions and batch norms run on ``x.flatten(0, 1)`` (T·B
samples), as in every official spiking-transformer code base; only the neurons are recurrent in time.

Neurons here are stateless modules (``LIFNeuron``, from ``spikeops.nn.neurons``): each forward starts from
v = 0 and returns spikes only, so a model needs no ``reset_net`` between batches and works unchanged under
DDP and ``torch.compile``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.common import ConvBN
from ..nn.neurons import LIF_TAU, LIFNeuron, check_backend

__all__ = ["LIFNeuron", "ConvBN", "SpikingMLP", "set_backend", "neurons_of", "check_backend", "to_time_major",
           "count_parameters", "LIF_TAU"]

# The models' shared neuron is ``LIFNeuron``: SpikingJelly MultiStepLIFNode(tau=LIF_TAU=2.0, detach_reset=True)
# with the default Sigmoid(alpha=4) surrogate and hard reset to 0, run statelessly.


def neurons_of(model: nn.Module):
    """Every neuron module of ``model`` (anything with a ``backend`` attribute that fires spikes)."""
    return [m for m in model.modules() if hasattr(m, "backend") and isinstance(m, nn.Module)]


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switches every spikeops call inside ``model`` to ``backend`` (weights untouched)."""
    check_backend(backend)
    for module in neurons_of(model):
        module.backend = backend
    return model


class SpikingMLP(nn.Module):
    """Conv1x1-BN-LIF, Conv1x1-BN-LIF (QKFormer, Spikformer ImageNet MLP; docs/models.md)."""

    def __init__(self, dim: int, hidden_dim: int, backend: str = "auto"):
        super().__init__()
        self.fc1 = ConvBN(dim, hidden_dim, bias=True)
        self.fc1_lif = LIFNeuron(backend=backend)
        self.fc2 = ConvBN(hidden_dim, dim, bias=True)
        self.fc2_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ConvBN(x, neuron): the BatchNorm fused into the neuron (spikeops/nn/batchnorm_fusion.py)
        return self.fc2(self.fc1(x, self.fc1_lif), self.fc2_lif)


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
