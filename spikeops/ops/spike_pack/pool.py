"""Max-pooling that keeps no int64 indices.

``nn.MaxPool2d`` saves its input and an int64 index per output element (8 B). ``spike_max_pool2d`` saves
instead the input alone: packed to bits when it is a marked spike tensor (pooling binary spikes is an OR),
as it is otherwise (``recompute_indices=True``); backward recomputes the argmax in the scan order and with
the tie and NaN rule of ``aten.max_pool2d_with_indices`` (the first maximal element, the last NaN, padding as
-inf) and adds the gradient as ``aten.max_pool2d_with_indices_backward`` does, in one call
(``spikeops.ops.max_pool``: C++ kernels on CPU float32/float64, the ATen pair elsewhere): the values and the
gradient are those of ``nn.MaxPool2d`` bit for bit, ties and padding included. The pooled output of spikes
is spikes of the same kind (a maximum of spike values is one of them), so it is marked as such.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from ..max_pool import max_pool2d_recompute_backward, max_pool2d_values
from .hooks import _state, marking_active, pack, packing_active
from .registry import mark_spikes, spike_info

__all__ = ["spike_max_pool2d", "max_pool_args"]


class _MaxPool2dRecompute(torch.autograd.Function):
    """Max-pool whose backward recomputes the indices; ``x`` saved packed (spikes) or as it is."""

    @staticmethod
    def forward(ctx, x, packed, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.packed = packed
        if packed is None:
            ctx.save_for_backward(x)
        return max_pool2d_values(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def backward(ctx, grad):
        x = ctx.packed.unpack() if ctx.packed is not None else ctx.saved_tensors[0]
        grad_x = max_pool2d_recompute_backward(grad, x, *ctx.args)
        return grad_x, None, None, None, None, None, None


def max_pool_args(kernel_size, stride=None, padding=0, dilation=1):
    """F.max_pool2d's pair arguments as the lists ATen's max-pool kernels take (stride None: the kernel size)."""
    kernel_size = list(_pair(kernel_size))
    empty = stride is None or (not isinstance(stride, int) and len(stride) == 0)
    stride = kernel_size if empty else list(_pair(stride))
    return kernel_size, list(stride), list(_pair(padding)), list(_pair(dilation))


def spike_max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                     return_indices: bool = False, *, recompute_indices: bool = False):
    """``F.max_pool2d`` with the same arguments and the same values and gradients, holding no indices for
    spike input: a marked spike tensor (while packing is on) is kept as bits and the argmax recomputed in
    backward. Other input goes to ``F.max_pool2d``, unless ``recompute_indices=True``: then it is saved as it is
    and the indices recomputed (exact too; saves the 8 B index per output element). ``return_indices=True``
    always goes to ``F.max_pool2d``."""
    if return_indices or not isinstance(x, torch.Tensor) or not (x.requires_grad and torch.is_grad_enabled()) \
            or torch.compiler.is_compiling():
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                            return_indices=return_indices)
    # Inside an activation checkpoint spikes are marked but not packed here: the checkpoint keeps nothing of
    # the block, and forward and recompute must save the same tensors (both see marking_active()).
    info = spike_info(x) if marking_active() else None
    packed = pack(x, verify=_state.verify > 0) if info is not None and packing_active() else None
    if info is None and not recompute_indices:
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    if packed is not None:
        for counter in _state.counters:  # held in ctx, past the saved-tensor hooks: count it here
            counter._record(x, packed)
    kernel_size, stride, padding, dilation = max_pool_args(kernel_size, stride, padding, dilation)
    out = _MaxPool2dRecompute.apply(x, packed, kernel_size, stride, padding, dilation, bool(ceil_mode))
    if info is not None:  # the maximum of spikes is spikes of the same kind
        mark_spikes(out, info.kind, info.levels, norm=info.norm)
    return out

