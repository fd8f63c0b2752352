"""``neuron(BatchNorm(x))`` with BatchNorm fused into the neuron (spikeops/ops/batchnorm_neuron): backward
keeps BatchNorm's input and its per-channel statistics, not the normalised tensor the neuron would keep.

``batchnorm_then_neuron(bn, neuron, x)`` takes the modules as they are (their parameters, buffers and
names unchanged, so checkpoints load as before) and falls back to ``neuron(bn(x))`` where the pair cannot
be fused exactly: a BatchNorm subclass, or a neuron whose forward does not take ``batchnorm=`` (declared by
``fuses_batchnorm = True``; neurons of other libraries, single-step neurons). ``batchnorm_then_neuron(bn,
neuron, x, pool)`` fuses a max-pool standing between them too (``nn.MaxPool2d`` / ``SpikeMaxPool2d`` only).
"""
from __future__ import annotations

import torch
from torch import nn

from .packing import SpikeMaxPool2d

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


def pool_fusable(pool: nn.Module) -> bool:
    """A max-pool the fused operator can run between BatchNorm and neuron: an ``nn.MaxPool2d`` (or the
    index-free ``SpikeMaxPool2d``) returning no indices. A subclass with a forward of its own is not."""
    return type(pool) in (nn.MaxPool2d, SpikeMaxPool2d) and not pool.return_indices


def pool_arguments(pool: nn.MaxPool2d) -> dict:
    """The ``pool=`` argument of spikeops.ops.batchnorm_neuron that pools as ``pool`` does."""
    return dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding, dilation=pool.dilation,
                ceil_mode=pool.ceil_mode)


def batchnorm_then_neuron(bn: nn.Module, neuron: nn.Module, x: torch.Tensor, pool: nn.Module | None = None
                          ) -> torch.Tensor:
    """``neuron(bn(x))`` for time-major ``x`` [T, B, C, *], ``bn`` normalising over the flattened T*B batch;
    with ``pool`` (a 2-d max-pool on [T*B, C, H, W]), ``neuron(pool(bn(x)))``. The fused call still goes
    through the neuron module (its hooks see it, with the BatchNorm's input); with a pool, backward keeps
    BatchNorm's input alone and recomputes normalisation and pool."""
    if fusable(bn, neuron) and x.dim() >= 3:
        if pool is None:
            return neuron(x, batchnorm=batchnorm_arguments(bn))
        if x.dim() == 5 and pool_fusable(pool):
            return neuron(x, batchnorm=dict(batchnorm_arguments(bn), pool=pool_arguments(pool)))
    y = bn(x.flatten(0, 1))
    if pool is not None:
        y = pool(y)
    return neuron(y.view(*x.shape[:2], *y.shape[1:]))


class FusingSequential(nn.Sequential):
    """An ``nn.Sequential`` that runs chosen (BatchNorm holder, neuron) neighbours fused: the holder's work up
    to its BatchNorm, then ``neuron(pre_batchnorm, batchnorm=...)``. ``spikeops.convert`` switches a model's
    Sequentials to this class in place (same modules, same parameter names); ``fused_pairs`` holds the
    index of each holder, whose output went only to the next module. The holder's own hooks do not run on
    the fused path."""

    fused_pairs: frozenset = frozenset()

    def forward(self, x):
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            if i in self.fused_pairs:
                pre, bn = split_batchnorm(modules[i], x)
                x = modules[i + 1](pre, batchnorm=batchnorm_arguments(bn))
                i += 2
            else:
                x = modules[i](x)
                i += 1
        return x


def _multi_step(module) -> bool:
    return getattr(module, "step_mode", "s") == "m"


def batchnorm_holder(module: nn.Module) -> nn.Module | None:
    """The BatchNorm a module ends with, when its output is that BatchNorm applied over the flattened time and
    batch dims of a time-major input: a multi-step SpikingJelly ``layer.BatchNorm*d``, or a
    ``SeqToANNContainer`` whose last module is an ``nn.BatchNorm*d``. None otherwise."""
    kind = type(module)
    if (kind.__module__ == "spikingjelly.activation_based.layer.bn" and isinstance(module, _BATCHNORMS)
            and kind.__name__ in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d") and _multi_step(module)):
        return module
    if (kind.__name__ == "SeqToANNContainer" and kind.__module__.startswith(("spikingjelly.", "spikeops.legacy"))
            and len(module) and type(module[-1]) in _BATCHNORMS):
        return module[-1]
    return None


def split_batchnorm(module: nn.Module, x: torch.Tensor):
    """(the holder's output before its BatchNorm, time-major; the BatchNorm)."""
    bn = batchnorm_holder(module)
    if bn is module:
        return x, bn
    T, B = x.shape[:2]
    y = x.flatten(0, 1)
    for inner in list(module)[:-1]:
        y = inner(y)
    return y.view(T, B, *y.shape[1:]), bn


def fuse_sequential_batchnorms(model: nn.Module, neuron_type: type) -> list[tuple[str, str]]:
    """Switches every plain ``nn.Sequential`` of ``model`` in which a BatchNorm holder is followed by a
    multi-step ``neuron_type`` to ``FusingSequential``; returns the (holder, neuron) names fused."""
    fused = []
    for name, parent in model.named_modules():
        if type(parent) is not nn.Sequential:
            continue
        children = list(parent._modules.items())
        pairs = [i for i in range(len(children) - 1)
                 if batchnorm_holder(children[i][1]) is not None and isinstance(children[i + 1][1], neuron_type)
                 and getattr(children[i + 1][1], "fuses_batchnorm", False) and _multi_step(children[i + 1][1])]
        # A holder is fused with the neuron after it only: pairs never overlap.
        pairs = [i for k, i in enumerate(pairs) if k == 0 or pairs[k - 1] != i - 1]
        if pairs:
            parent.__class__ = FusingSequential
            parent.fused_pairs = frozenset(pairs)
            prefix = f"{name}." if name else ""
            fused += [(prefix + children[i][0], prefix + children[i + 1][0]) for i in pairs]
    return fused
