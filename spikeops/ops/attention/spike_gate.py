"""The "spike gate" operator behind Q-K token attention, Q-K channel attention and spike-driven
self-attention: reduce an input (or the product of two inputs) over one axis, run the attention LIF
over T on the sums, and multiply a third input by the resulting spikes, broadcast over that axis.

torch.library registrations (Triton ops here, C++ schemas in csrc/spike_gate/spike_gate_schema.cpp), fake kernels,
and the autograd Function. Forward saves the membrane H of the attention neurons (float32) and their
spikes (int8): per input element that is 5/R bytes (9/R for float64), R being the reduced length (d or N), besides
the inputs a (a2) and gate (a is saved even where the fused backward does not read it: a double backward needs it).

The registered ops check their geometry against their tensors before any launch (csrc/spike_gate/spike_gate_host.h,
``check_geometry`` here); the geometry list is ``SymInt[]``, so a compiled graph stays dynamic in batch and space.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._autograd import loop_vmap, recording_backward, reference_backward
from .._dispatch import forward_backward_ops, register_fakes
from ..neuron.config import NeuronConfig
from . import naive
from .layout import Geometry


def _fake_forward(a, a2, gate, geometry, cfg):
    M = geometry[0]
    membrane_dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    return (torch.empty_like(gate), a.new_empty((a.shape[0], M), dtype=membrane_dtype),
            a.new_empty((a.shape[0], M), dtype=torch.int8))


def _fake_backward(grad_out, a, a2, gate, h, spikes, geometry, cfg):
    return torch.empty_like(a), torch.empty_like(a2) if a2 is not None else a.new_empty(0), torch.empty_like(gate)


def check_geometry(a: torch.Tensor, geometry) -> Geometry:
    """The Python twin of csrc/spike_gate/spike_gate_host.h::gate_geometry, run by the Triton ops before any
    launch: a time slice of ``a`` must be [M / L groups, R, L lanes] in row-major order (stride_g = R*L,
    stride_r = L, stride_l = 1, or 0 when L = 1), so every index the kernels form lies inside ``a``."""
    if len(geometry) != 6:
        raise ValueError(f"spike_gate: geometry: expected 6 fields (M, R, L, stride_g, stride_r, stride_l), got "
                         f"{list(geometry)}")
    M, R, L, stride_g, stride_r, stride_l = (int(v) for v in geometry)
    if a.dim() < 1 or a.shape[0] < 1:
        raise ValueError(f"spike_gate: a: expected [T, ...] with T >= 1, got shape {tuple(a.shape)}")
    if M < 0 or R < 0 or L < 1 or M % L:
        raise ValueError(f"spike_gate: geometry: expected M >= 0, R >= 0 and L >= 1 dividing M, got M={M} R={R} L={L}")
    if a.shape[0] * M * R != a.numel():
        raise ValueError(f"spike_gate: geometry: expected T*M*R to equal the {a.numel()} elements of a (shape "
                         f"{tuple(a.shape)}), got T={a.shape[0]} M={M} R={R}")
    if stride_g != R * L or stride_r != L or not (stride_l == 1 or (L == 1 and stride_l == 0)):
        raise ValueError(f"spike_gate: geometry: expected strides stride_g = R*L = {R * L}, stride_r = L = {L}, "
                         f"stride_l = 1{' (or 0)' if L == 1 else ''} for M={M} R={R} L={L}, got stride_g={stride_g} "
                         f"stride_r={stride_r} stride_l={stride_l}")
    return Geometry(M, R, L, stride_g, stride_r, stride_l)


def _check_like(x, like, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.shape != like.shape or x.dtype != like.dtype or x.device != like.device \
            or not x.is_contiguous():
        got = f"{tuple(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"spike_gate: {name}: expected a contiguous tensor of shape {tuple(like.shape)}, dtype "
                         f"{like.dtype} and device {like.device}, got {got}")


def _check_gate_inputs(a, a2, gate, geometry) -> Geometry:
    if not a.is_contiguous():
        raise ValueError(f"spike_gate: a: expected a contiguous tensor, got strides {a.stride()}")
    if a2 is not None:
        _check_like(a2, a, "a2")
    _check_like(gate, a, "gate")
    return check_geometry(a, geometry)


def _check_gate_state(h, spikes, geo: Geometry, a) -> None:
    want = (a.shape[0], geo.M)
    for name, x, dtype in (("h", h, torch.float32), ("spikes", spikes, torch.int8)):
        if tuple(x.shape) != want or x.dtype != dtype or x.device != a.device or not x.is_contiguous():
            raise ValueError(f"spike_gate: {name}: expected a contiguous {dtype} tensor of shape {want} on {a.device}, "
                             f"got {tuple(x.shape)} {x.dtype} on {x.device}")


@torch.library.custom_op("spikeops::spike_gate_forward_triton", mutates_args=())
def _spike_gate_forward_triton(a: torch.Tensor, a2: Optional[torch.Tensor], gate: torch.Tensor, geometry: list[int],
                               cfg: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    geo = _check_gate_inputs(a, a2, gate, geometry)
    from ...kernels import spike_gate as kernels
    return kernels.spike_gate_forward(a, a2, gate, geo, NeuronConfig.from_list(cfg))


@torch.library.custom_op("spikeops::spike_gate_backward_triton", mutates_args=())
def _spike_gate_backward_triton(grad_out: torch.Tensor, a: torch.Tensor, a2: Optional[torch.Tensor],
                                gate: torch.Tensor, h: torch.Tensor, spikes: torch.Tensor, geometry: list[int],
                                cfg: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    geo = _check_gate_inputs(a, a2, gate, geometry)
    _check_like(grad_out, gate, "grad_out")
    _check_gate_state(h, spikes, geo, a)
    from ...kernels import spike_gate as kernels
    return kernels.spike_gate_backward(grad_out, a, a2, gate, h, spikes, geo, NeuronConfig.from_list(cfg))


register_fakes("spike_gate", _fake_forward, _fake_backward)


def _ops(backend: str):
    return forward_backward_ops("spike_gate", backend)


def gate_reference(a, a2, gate, geo: Geometry, cfg: NeuronConfig) -> torch.Tensor:
    """The pure-PyTorch form of the fused op for any geometry (what spikeops/ops/attention/naive.py computes
    per operator): a time slice is [M / L, R, L]; sum over R (of a, or of a * a2), the attention LIF over T,
    gate times the spikes broadcast over R. Used to differentiate the op twice."""
    T, G = a.shape[0], geo.M // geo.L
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    x = a.to(acc).reshape(T, G, geo.R, geo.L)
    if a2 is not None:
        x = x * a2.to(acc).reshape(T, G, geo.R, geo.L)
    spikes = naive.attention_neuron(x.sum(2), cfg)  # [T, G, L]
    return (spikes.unsqueeze(2).to(gate.dtype) * gate.reshape(T, G, geo.R, geo.L)).reshape(gate.shape)


class SpikeGateFunction(torch.autograd.Function):
    """out = LIF_T(sum_r a[*, r] (* a2[*, r])) * gate[*, r]; inputs contiguous, same shape [T, ...].

    Backward runs the fused kernel; a backward that autograd records (double backward) differentiates
    ``gate_reference`` instead. vmap (torch.func) runs the op once per batch entry."""

    @staticmethod
    def forward(a, a2, gate, geo: Geometry, cfg: NeuronConfig, backend: str):
        forward_op, _ = _ops(backend)
        out, h, spikes = forward_op(a, a2, gate, geo.as_list(), cfg.as_list())
        return out, h, spikes

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, a2, gate, geo, cfg, backend = inputs
        _, h, spikes = output
        # a is saved even where the kernels' backward does not read it (no a2): a double backward needs it.
        ctx.save_for_backward(a, a2, gate, h, spikes)
        ctx.geo, ctx.cfg, ctx.backend = geo, cfg, backend
        ctx.mark_non_differentiable(h, spikes)

    @staticmethod
    def backward(ctx, grad_out, _grad_h, _grad_spikes):
        a, a2, gate, h, spikes = ctx.saved_tensors
        if recording_backward(grad_out, a):
            grads = reference_backward(lambda a_, a2_, gate_: gate_reference(a_, a2_, gate_, ctx.geo, ctx.cfg),
                                       (a, a2, gate), (grad_out,), ctx.needs_input_grad[:3])
            return (*grads, None, None, None)
        _, backward_op = _ops(ctx.backend)
        grad_a, grad_a2, grad_gate = backward_op(grad_out.contiguous(), a, a2, gate, h, spikes, ctx.geo.as_list(),
                                                 ctx.cfg.as_list())
        return grad_a, (grad_a2 if a2 is not None else None), grad_gate, None, None, None

    @staticmethod
    def vmap(info, in_dims, *args):
        return loop_vmap(SpikeGateFunction, info, in_dims, *args)


def spike_gate(a, a2, gate, geo: Geometry, cfg: NeuronConfig, backend: str):
    """Runs the fused op on a resolved non-"torch" backend; returns (out, attention spikes as int8 [T, M])."""
    if backend == "triton" and a.dtype == torch.float64:
        raise TypeError("q: the 'triton' backend supports float32, float16 and bfloat16; use backend='cpu' or "
                        "'torch' for float64")
    a = a.contiguous()
    a2 = a2.contiguous() if a2 is not None else None
    out, _, spikes = SpikeGateFunction.apply(a, a2, gate.contiguous(), geo, cfg, backend)
    return out, spikes
