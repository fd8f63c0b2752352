"""The fused multi-step neuron operator: torch.library registrations, the autograd Function and the
one public entry point ``neuron_multi_step`` that validates, picks a backend and runs it.

Forward saves x (which autograd usually holds anyway), v0 and the spikes as int8 (1 byte per
neuron-step); backward recomputes H from them inside the kernel instead of saving it.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import backends
from .._dispatch import forward_backward_ops, register_fakes
from . import naive
from .config import NeuronConfig

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------- torch.library registrations
def _fake_forward(x, v0, leak, cfg, store_v_seq):
    v_seq = torch.empty_like(x) if store_v_seq else x.new_empty(0)
    return torch.empty_like(x), torch.empty_like(v0), v_seq, torch.empty(x.shape, dtype=torch.int8, device=x.device)


def _fake_backward(grad_spikes, grad_v_seq, grad_v_last, x, v0, spikes, leak, cfg, need_leak_grad):
    n = x.shape[1] if need_leak_grad else 0
    return torch.empty_like(x), torch.empty_like(v0), x.new_empty(n, dtype=torch.float32)


@torch.library.custom_op("spikeops::neuron_forward_triton", mutates_args=())
def _neuron_forward_triton(x: torch.Tensor, v0: torch.Tensor, leak: Optional[torch.Tensor], cfg: list[float],
                           store_v_seq: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from ...kernels import neuron as triton_neuron
    return triton_neuron.neuron_forward(x, v0, leak, NeuronConfig.from_list(cfg), store_v_seq)


@torch.library.custom_op("spikeops::neuron_backward_triton", mutates_args=())
def _neuron_backward_triton(grad_spikes: torch.Tensor, grad_v_seq: Optional[torch.Tensor],
                            grad_v_last: Optional[torch.Tensor], x: torch.Tensor, v0: torch.Tensor,
                            spikes: torch.Tensor, leak: Optional[torch.Tensor], cfg: list[float],
                            need_leak_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ...kernels import neuron as triton_neuron
    return triton_neuron.neuron_backward(grad_spikes, grad_v_seq, grad_v_last, x, v0, spikes, leak,
                                         NeuronConfig.from_list(cfg), need_leak_grad)


register_fakes("neuron", _fake_forward, _fake_backward)


def _ops(backend: str):
    return forward_backward_ops("neuron", backend)


# ---------------------------------------------------------------- autograd
class NeuronFunction(torch.autograd.Function):
    """Fused forward over all T in one launch, fused BPTT in one launch. x is [T, N] contiguous."""

    @staticmethod
    def forward(ctx, x, v0, leak, cfg: NeuronConfig, store_v_seq: bool, backend: str):
        forward_op, _ = _ops(backend)
        spikes, v_last, v_seq, spikes_i8 = forward_op(x, v0, leak, cfg.as_list(), store_v_seq)
        ctx.save_for_backward(x, v0, spikes_i8, leak)
        ctx.cfg, ctx.backend = cfg, backend
        return spikes, v_last, v_seq

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq):
        x, v0, spikes_i8, leak = ctx.saved_tensors
        _, backward_op = _ops(ctx.backend)
        grad_spikes = torch.zeros_like(x) if grad_spikes is None else grad_spikes.contiguous()
        if grad_v_seq is not None:
            grad_v_seq = grad_v_seq.contiguous() if grad_v_seq.numel() else None
        if grad_v_last is not None:
            grad_v_last = grad_v_last.contiguous()
        need_leak_grad = leak is not None and ctx.needs_input_grad[2]
        grad_x, grad_v0, grad_leak = backward_op(grad_spikes, grad_v_seq, grad_v_last, x, v0, spikes_i8, leak,
                                                 ctx.cfg.as_list(), need_leak_grad)
        grad_leak = grad_leak.sum().reshape(leak.shape).to(leak.dtype) if need_leak_grad else None
        return grad_x, grad_v0, grad_leak, None, None, None


# ---------------------------------------------------------------- public entry point
def check_input(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype {tuple(str(d) for d in FLOAT_DTYPES)}, got {x.dtype}")


def neuron_multi_step(x: torch.Tensor, v0=None, *, cfg: NeuronConfig, leak: torch.Tensor | None = None,
                      backend: str = "auto", store_v_seq: bool = False):
    """Runs the neuron over the leading time dimension of ``x`` ([T, *]).

    v0: initial membrane, a tensor of shape x.shape[1:] (or broadcastable to it) or a number; None is 0.
    Returns (spikes [T, *] in x's dtype, v_last [*], v_seq [T, *] or None).
    """
    check_input(x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x: expected a time-major tensor [T, *] with T >= 1, got shape {tuple(x.shape)}")
    neuron_shape = x.shape[1:]
    if v0 is None or isinstance(v0, (int, float)):
        v0 = torch.full(neuron_shape, 0.0 if v0 is None else float(v0), dtype=x.dtype, device=x.device)
    else:
        check_input(v0, "v0")
        if v0.device != x.device:
            raise ValueError(f"v0: expected a tensor on {x.device} (x's device), got {v0.device}")
        try:
            v0 = v0.to(x.dtype).expand(neuron_shape)
        except RuntimeError:
            raise ValueError(f"v0: expected shape {tuple(neuron_shape)} (x.shape[1:]), got {tuple(v0.shape)}") from None
    if leak is not None:
        check_input(leak, "leak")
        if leak.numel() != 1 or leak.device != x.device:
            raise ValueError(f"leak: expected a one-element tensor on {x.device}, got shape {tuple(leak.shape)} on {leak.device}")
    if (leak is not None) != cfg.law.learnable_leak:
        raise ValueError(f"leak: the {cfg.law.name!r} charge law {'needs' if cfg.law.learnable_leak else 'takes no'} "
                         "leak tensor")
    backend = backends.resolve(backend, x.device)
    if backend == "triton" and x.dtype == torch.float64:
        raise TypeError("x: the 'triton' backend supports float32, float16 and bfloat16; use backend='cpu' or 'torch' for float64")
    if backend == "torch":
        return naive.multi_step(x, v0, cfg, leak, store_v_seq)

    T = x.shape[0]
    x2d = x.reshape(T, -1).contiguous()
    v0_1d = v0.reshape(-1).contiguous()
    leak_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    leak = None if leak is None else leak.reshape(1).to(leak_dtype)
    spikes, v_last, v_seq = NeuronFunction.apply(x2d, v0_1d, leak, cfg, store_v_seq, backend)
    return (spikes.view(x.shape), v_last.view(neuron_shape), v_seq.view(x.shape) if store_v_seq else None)
