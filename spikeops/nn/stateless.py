"""Running stateful spikeops neurons statelessly: every call from rest, no membrane kept afterwards.

SpikingJelly-style neurons keep their membranes across calls until ``reset()``. The reference backbones
promise that every forward starts from rest and keeps no state (no ``reset_net``, DDP and
``torch.compile`` unchanged), so a block built with ``stateless=True`` wraps each such neuron to run from
rest and to drop the membrane it leaves behind, which would otherwise keep the last batch's autograd
graph alive.
"""
from __future__ import annotations

import torch
from torch import nn

from .neurons import BaseNeuron

__all__ = ["StatelessNeuron", "make_stateless"]


class StatelessNeuron(nn.Module):
    """``neuron`` run from its resting state on every call; the membrane is cleared again afterwards."""

    def __init__(self, neuron: BaseNeuron):
        super().__init__()
        if not isinstance(neuron, BaseNeuron):
            raise TypeError(f"neuron: expected a spikeops neuron (BaseNeuron), got {type(neuron).__name__}")
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.neuron.reset()
        try:
            return self.neuron(x)
        finally:
            self.neuron.reset()


def make_stateless(block: nn.Module) -> nn.Module:
    """Wraps every spikeops neuron inside ``block`` (in place) in a ``StatelessNeuron``; returns ``block``.
    Parameter and buffer names are unchanged: the neurons wrapped here own none."""
    for name, child in list(block.named_children()):
        if isinstance(child, BaseNeuron):
            if any(True for _ in child.parameters()):
                raise ValueError(f"block: neuron {name!r} has parameters; wrapping it would rename them")
            setattr(block, name, StatelessNeuron(child))
        elif not isinstance(child, StatelessNeuron):
            make_stateless(child)
    return block
