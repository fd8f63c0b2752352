"""The "spike gate" operator behind Q-K token attention, Q-K channel attention and spike-driven
self-attention: reduce an input (or the product of two inputs) over one axis, run the attention LIF
over T on the sums, and multiply a third input by the resulting spikes, broadcast over that axis.

torch.library registrations (Triton ops here, C++ schemas in csrc/spike_gate/spike_gate_schema.cpp), fake kernels,
and the autograd Function. Forward saves the membrane H of the attention neurons (float32) and their
spikes (int8): per input element that is 5/R bytes (9/R for float64), R being the reduced length (d or N); the inputs
themselves are saved only where the backward needs them (a, a2 for a product, gate always).
"""
from __future__ import annotations

from typing import Optional

import torch

from .._dispatch import forward_backward_ops, register_fakes
from ..neuron.config import NeuronConfig
from .layout import Geometry


def _fake_forward(a, a2, gate, geometry, cfg):
    M = geometry[0]
    membrane_dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    return (torch.empty_like(gate), a.new_empty((a.shape[0], M), dtype=membrane_dtype),
            a.new_empty((a.shape[0], M), dtype=torch.int8))


def _fake_backward(grad_out, a, a2, gate, h, spikes, geometry, cfg):
    return torch.empty_like(a), torch.empty_like(a2) if a2 is not None else a.new_empty(0), torch.empty_like(gate)


@torch.library.custom_op("spikeops::spike_gate_forward_triton", mutates_args=())
def _spike_gate_forward_triton(a: torch.Tensor, a2: Optional[torch.Tensor], gate: torch.Tensor, geometry: list[int],
                               cfg: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ...kernels import spike_gate as kernels
    return kernels.spike_gate_forward(a, a2, gate, Geometry(*geometry), NeuronConfig.from_list(cfg))


@torch.library.custom_op("spikeops::spike_gate_backward_triton", mutates_args=())
def _spike_gate_backward_triton(grad_out: torch.Tensor, a: torch.Tensor, a2: Optional[torch.Tensor],
                                gate: torch.Tensor, h: torch.Tensor, spikes: torch.Tensor, geometry: list[int],
                                cfg: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ...kernels import spike_gate as kernels
    return kernels.spike_gate_backward(grad_out, a, a2, gate, h, spikes, Geometry(*geometry), NeuronConfig.from_list(cfg))


register_fakes("spike_gate", _fake_forward, _fake_backward)


def _ops(backend: str):
    return forward_backward_ops("spike_gate", backend)


class SpikeGateFunction(torch.autograd.Function):
    """out = LIF_T(sum_r a[*, r] (* a2[*, r])) * gate[*, r]; inputs contiguous, same shape [T, ...]."""

    @staticmethod
    def forward(ctx, a, a2, gate, geo: Geometry, cfg: NeuronConfig, backend: str):
        forward_op, _ = _ops(backend)
        out, h, spikes = forward_op(a, a2, gate, geo.as_list(), cfg.as_list())
        ctx.save_for_backward(a if a2 is not None else None, a2, gate, h, spikes)
        ctx.geo, ctx.cfg, ctx.backend = geo, cfg, backend
        ctx.mark_non_differentiable(h, spikes)
        return out, spikes

    @staticmethod
    def backward(ctx, grad_out, _grad_spikes):
        a, a2, gate, h, spikes = ctx.saved_tensors
        if a is None:  # the kernels read a only to multiply it with a2; gate has a's shape and dtype
            a = gate
        _, backward_op = _ops(ctx.backend)
        grad_a, grad_a2, grad_gate = backward_op(grad_out.contiguous(), a, a2, gate, h, spikes, ctx.geo.as_list(),
                                                 ctx.cfg.as_list())
        return grad_a, (grad_a2 if a2 is not None else None), grad_gate, None, None, None


def spike_gate(a, a2, gate, geo: Geometry, cfg: NeuronConfig, backend: str):
    """Runs the fused op on a resolved non-"torch" backend; returns (out, attention spikes as int8 [T, M])."""
    if backend == "triton" and a.dtype == torch.float64:
        raise TypeError("q: the 'triton' backend supports float32, float16 and bfloat16; use backend='cpu' or "
                        "'torch' for float64")
    a = a.contiguous()
    a2 = a2.contiguous() if a2 is not None else None
    return SpikeGateFunction.apply(a, a2, gate.contiguous(), geo, cfg, backend)
