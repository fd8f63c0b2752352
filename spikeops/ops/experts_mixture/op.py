"""The fused spiking experts mixture: torch.library registrations, the autograd Function and the
public entry point ``experts_mixture(router_spikes, expert_outputs)``.

Forward skips the row of every expert whose router spike is zero for a token and never forms the
gated products; backward writes dA = R dY and the router gradient dR_i = sum_c dY A_i in one pass.
"""
from __future__ import annotations

import torch

from ... import backends
from .._autograd import loop_vmap, recording_backward, reference_backward
from .._dispatch import forward_backward_ops, register_fakes
from ..attention.layout import check_dense
from ..neuron.op import check_input
from . import naive


# ---------------------------------------------------------------- torch.library registrations
def _fake_forward(router, experts):
    return experts.new_empty((experts.shape[0], experts.shape[2]))


def _fake_backward(grad_y, router, experts):
    return torch.empty_like(router), torch.empty_like(experts)


def _check_kernel_call(router, experts, grad_y=None) -> None:
    """What csrc/experts_mixture/experts_mixture_cpu.cpp checks, for the Triton ops: every index the kernels form
    lies inside their tensors."""
    if router.dim() != 2 or not router.is_contiguous():
        raise ValueError(f"experts_mixture: router: expected a contiguous [M, E] tensor, got shape "
                         f"{tuple(router.shape)} strides {router.stride()}")
    if experts.dim() != 3 or experts.shape[:2] != router.shape or not experts.is_contiguous():
        raise ValueError(f"experts_mixture: experts: expected a contiguous [M, E, C] tensor matching router "
                         f"{tuple(router.shape)}, got {tuple(experts.shape)}")
    if experts.dtype != router.dtype or experts.device != router.device:
        raise ValueError(f"experts_mixture: experts: expected router's dtype {router.dtype} on {router.device}, got "
                         f"{experts.dtype} on {experts.device}")
    if grad_y is not None and (tuple(grad_y.shape) != (experts.shape[0], experts.shape[2]) or not grad_y.is_contiguous()
                               or grad_y.dtype != experts.dtype or grad_y.device != experts.device):
        raise ValueError(f"experts_mixture: grad_y: expected a contiguous [M, C] = {(experts.shape[0], experts.shape[2])} "
                         f"tensor of the experts' dtype {experts.dtype} on {experts.device}, got {tuple(grad_y.shape)} "
                         f"{grad_y.dtype} on {grad_y.device}")


@torch.library.custom_op("spikeops::experts_mixture_forward_triton", mutates_args=())
def _forward_triton(router: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    _check_kernel_call(router, experts)
    from ...kernels import experts_mixture as kernels
    return kernels.experts_mixture_forward(router, experts)


@torch.library.custom_op("spikeops::experts_mixture_backward_triton", mutates_args=())
def _backward_triton(grad_y: torch.Tensor, router: torch.Tensor,
                     experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_kernel_call(router, experts, grad_y)
    from ...kernels import experts_mixture as kernels
    return kernels.experts_mixture_backward(grad_y, router, experts)


register_fakes("experts_mixture", _fake_forward, _fake_backward)


def _ops(backend: str):
    return forward_backward_ops("experts_mixture", backend)


# ---------------------------------------------------------------- autograd
class ExpertsMixtureFunction(torch.autograd.Function):
    """router [M, E], experts [M, E, C], both contiguous; returns Y [M, C]. A backward that autograd records
    (double backward) is the reference formula (dR_i = sum_c dY A_i, dA_i = R_i dY, as the kernels compute
    it), differentiable; vmap (torch.func) runs the op once per batch entry."""

    @staticmethod
    def forward(router, experts, backend: str):
        forward_op, _ = _ops(backend)
        return forward_op(router, experts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        router, experts, backend = inputs
        ctx.save_for_backward(router, experts)
        ctx.backend = backend

    @staticmethod
    def vmap(info, in_dims, *args):
        return loop_vmap(ExpertsMixtureFunction, info, in_dims, *args)

    @staticmethod
    def backward(ctx, grad_y):
        router, experts = ctx.saved_tensors
        if recording_backward(grad_y, router):
            grads = reference_backward(naive.experts_mixture, (router, experts), (grad_y,), ctx.needs_input_grad[:2])
            return (*grads, None)
        _, backward_op = _ops(ctx.backend)
        grad_router, grad_experts = backward_op(grad_y.contiguous(), router, experts)
        return grad_router, grad_experts, None


# ---------------------------------------------------------------- public entry point
def experts_mixture(router_spikes: torch.Tensor, expert_outputs: torch.Tensor, *,
                    backend: str = "auto") -> torch.Tensor:
    """Y[..., c] = sum_i R[..., i] * A[..., i, c]: router spikes R [..., m] gate the expert outputs
    A [..., m, C] (e.g. [T, B, N, m, C]), summed with no softmax and no top-k. Returns [..., C]."""
    for name, x in (("router_spikes", router_spikes), ("expert_outputs", expert_outputs)):
        check_dense(x, name)
        check_input(x, name)
    if router_spikes.dim() < 1:
        raise ValueError(f"router_spikes: expected [..., m] with at least one dimension, got shape "
                         f"{tuple(router_spikes.shape)}")
    if expert_outputs.dim() != router_spikes.dim() + 1 or expert_outputs.shape[:-1] != router_spikes.shape:
        raise ValueError(f"expert_outputs: expected shape {tuple(router_spikes.shape)} + (C,) (router_spikes' shape "
                         f"[..., m] plus a channel dimension), got {tuple(expert_outputs.shape)}")
    if expert_outputs.dtype != router_spikes.dtype or expert_outputs.device != router_spikes.device:
        raise ValueError(f"expert_outputs: expected router_spikes' dtype {router_spikes.dtype} on "
                         f"{router_spikes.device}, got {expert_outputs.dtype} on {expert_outputs.device}")
    backend = backends.resolve(backend, router_spikes.device)
    if backend == "triton" and router_spikes.dtype == torch.float64:
        raise TypeError("router_spikes: the 'triton' backend supports float32, float16 and bfloat16; use "
                        "backend='cpu' or 'torch' for float64")
    if backend == "torch" or expert_outputs.numel() == 0:  # empty (or m = 0: zeros): nothing to launch
        # The fused kernels never read a gated-off expert (router spike 0), so NaN/Inf there must not reach
        # Y here either (0 * NaN would). Finite values stay, so the router gradient sum_c dY A_i is unchanged.
        hidden = (router_spikes == 0).unsqueeze(-1) & ~expert_outputs.isfinite()
        return naive.experts_mixture(router_spikes, torch.where(hidden, 0.0, expert_outputs))
    m, C = expert_outputs.shape[-2], expert_outputs.shape[-1]
    y = ExpertsMixtureFunction.apply(router_spikes.reshape(-1, m).contiguous(),
                                     expert_outputs.reshape(-1, m, C).contiguous(), backend)
    return y.view(*router_spikes.shape[:-1], C)


__all__ = ["experts_mixture", "ExpertsMixtureFunction"]
