"""Spiking experts mixture in Triton: Y[t, c] = sum_i R[t, i] A[t, i, c] over router spikes R [M, E]
and expert outputs A [M, E, C]. A zero router spike masks its expert row out of the load, so the
memory traffic of an expert scales with its router's firing rate. Experts are summed in index
order, as in csrc/experts_mixture/experts_mixture_math.h, so the backends agree bit for bit.
"""
import torch
import triton
import triton.language as tl

BLOCK_T = 32
BLOCK_C = 128
BACKWARD_BLOCK_C = 64  # the backward keeps four [BLOCK_T, BLOCK_C] tiles live; 128 columns spill
NUM_WARPS = 4


@triton.jit
def experts_mixture_forward_kernel(router_ptr, experts_ptr, y_ptr, M, E, C,
                                   BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    tokens = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    token_mask = tokens < M
    col_mask = cols < C
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for i in range(E):
        row = tokens * E + i
        gate = tl.load(router_ptr + row, mask=token_mask, other=0.0).to(tl.float32)
        fired = token_mask & (gate != 0.0)
        expert = tl.load(experts_ptr + row[:, None] * C + cols[None, :], mask=fired[:, None] & col_mask[None, :],
                         other=0.0).to(tl.float32)
        acc += gate[:, None] * expert
    tl.store(y_ptr + tokens[:, None] * C + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=token_mask[:, None] & col_mask[None, :])


@triton.jit
def experts_mixture_backward_kernel(grad_y_ptr, router_ptr, experts_ptr, grad_router_ptr, grad_experts_ptr,
                                    M, E, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # The router gradient sum_c dY A_i needs every expert row, fired or not; one program owns whole
    # token rows so that sum needs no cross-program reduction.
    tokens = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    token_mask = tokens < M
    for i in range(E):
        row = tokens * E + i
        gate = tl.load(router_ptr + row, mask=token_mask, other=0.0).to(tl.float32)
        router_grad = tl.zeros([BLOCK_T], dtype=tl.float32)
        for start in range(0, C, BLOCK_C):
            cols = start + tl.arange(0, BLOCK_C).to(tl.int64)
            mask = token_mask[:, None] & (cols[None, :] < C)
            dy = tl.load(grad_y_ptr + tokens[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            expert = tl.load(experts_ptr + row[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            router_grad += tl.sum(dy * expert, axis=1)
            tl.store(grad_experts_ptr + row[:, None] * C + cols[None, :],
                     (gate[:, None] * dy).to(grad_experts_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_router_ptr + row, router_grad.to(grad_router_ptr.dtype.element_ty), mask=token_mask)


def experts_mixture_forward(router, experts):
    M, E, C = experts.shape
    y = torch.empty((M, C), dtype=experts.dtype, device=experts.device)
    if M * C == 0:
        return y
    experts_mixture_forward_kernel[(triton.cdiv(M, BLOCK_T), triton.cdiv(C, BLOCK_C))](
        router, experts, y, M, E, C, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS, enable_fp_fusion=False)
    return y


def experts_mixture_backward(grad_y, router, experts):
    M, E, C = experts.shape
    grad_router, grad_experts = torch.empty_like(router), torch.empty_like(experts)
    if M * E == 0:
        return grad_router, grad_experts
    experts_mixture_backward_kernel[(triton.cdiv(M, BLOCK_T),)](
        grad_y, router, experts, grad_router, grad_experts, M, E, C, BLOCK_T=BLOCK_T, BLOCK_C=BACKWARD_BLOCK_C,
        num_warps=NUM_WARPS, enable_fp_fusion=False)
    return grad_router, grad_experts


def aot_specs():
    """Every kernel of this module in float32 and bfloat16, for ahead-of-time compilation checks."""
    specs = []
    for dtype in ("fp32", "bf16"):
        tensor = f"*{dtype}"
        sizes = {"M": "i32", "E": "i32", "C": "i32"}
        blocks = dict(BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        specs.append(dict(name=f"experts_mixture_forward_{dtype}", kernel=experts_mixture_forward_kernel,
                          signature={"router_ptr": tensor, "experts_ptr": tensor, "y_ptr": tensor, **sizes},
                          constexprs=blocks, num_warps=NUM_WARPS))
        specs.append(dict(name=f"experts_mixture_backward_{dtype}", kernel=experts_mixture_backward_kernel,
                          signature={"grad_y_ptr": tensor, "router_ptr": tensor, "experts_ptr": tensor,
                                     "grad_router_ptr": tensor, "grad_experts_ptr": tensor, **sizes},
                          constexprs=dict(blocks, BLOCK_C=BACKWARD_BLOCK_C), num_warps=NUM_WARPS))
    return specs
