"""Spiking self-attention SN(Q K^T V * scale) (Spikformer SSA; SDT-v2 attention = the same in the
Q (K^T V) order, docs/attention.md): torch.library op for the fused Triton forward, the autograd Function,
and the order choice.

Forward, per backend:
  * "triton": kernels/ssa.py, one fused kernel (int8 tensor-core products with int32
    accumulation on integer operands, float32 otherwise; the LIF over T as the epilogue).
  * "cuda": on integer operands (spikes, SEW spike counts, |x| <= 127) with d <= 64 and no possible
    int32 overflow (d * N * bound^3 < 2**31), csrc/ssa/ssa_cuda.cu, one fused kernel: int8 `wmma`
    tensor-core products with int32 accumulation, all-zero Q / K / V tiles skipped, the LIF over T
    as the epilogue. The (Q K^T) V order additionally needs its scores to fit int8 (d * bound^2 <=
    127); otherwise the kernel runs Q (K^T V), which gives the same integers. Real-valued operands,
    float64, d > 64: the "cpu" path below on cuBLAS (see fused_cuda_order).
  * "cpu": ATen matmuls in float32 (BLAS; exact on integer operands while the sums stay below 2**24)
    followed by the fused multi-step neuron kernel: two launches instead of one.

Forward saves only the output spikes as int8 (1 byte per element) besides Q, K, V. Backward, on every
backend: recompute Q K^T V with ATen matmuls in the chosen order, run the fused neuron BPTT kernel of
the same backend on it ("triton" uses the Triton one), and form the matmul gradients.
"""
from __future__ import annotations

import torch

from .._dispatch import compiled_op, forward_backward_ops, register_fake
from ..neuron.config import NeuronConfig
from .layout import AttentionShape

ORDERS = ("auto", "q_kv", "qk_v")


@torch.library.custom_op("spikeops::ssa_forward_triton", mutates_args=())
def _ssa_forward_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: list[int], cfg: list[float],
                        scale: float, order_q_kv: bool, integer_bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ...kernels import ssa as ssa_kernels
    return ssa_kernels.ssa_forward(q, k, v, AttentionShape(*shape[:5], bool(shape[5])), NeuronConfig.from_list(cfg), scale,
                                     order_q_kv, integer_bound if integer_bound > 0 else None)


def _fake_forward(q, k, v, shape, cfg, scale, order_q_kv, integer_bound):
    return torch.empty_like(q), torch.empty(q.shape, dtype=torch.int8, device=q.device)


register_fake("ssa_forward", _fake_forward)  # the C++ op exists in CUDA builds only

INT8_MAX = 127
INT32_MAX = 2 ** 31 - 1
CUDA_FUSED_MAX_HEAD_DIM = 64  # csrc/ssa/ssa_cuda.cu compiles padded head dims 16, 32 and 64


def pick_order(order: str, s: AttentionShape) -> bool:
    """True for Q (K^T V) (cost ~ N d^2), False for (Q K^T) V (cost ~ N^2 d); "auto" takes the cheaper."""
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    if order == "auto":
        return s.d <= s.N
    return order == "q_kv"


def integer_bound(*tensors: torch.Tensor) -> int | None:
    """max |x| over the tensors when all hold integers that fit int8, else None (one pass, one sync)."""
    bound = 0
    for x in tensors:
        if x.numel() == 0:
            continue
        if not torch.equal(x, torch.round(x)):
            return None
        bound = max(bound, int(x.abs().max().item()))
    return bound if bound <= INT8_MAX else None


def fused_cuda_order(s: AttentionShape, dtype: torch.dtype, bound: int | None, order_q_kv: bool) -> bool | None:
    """The order csrc/ssa/ssa_cuda.cu runs (True: Q (K^T V)), or None when its int8 / int32 arithmetic cannot
    hold the operands exactly and the two-launch ATen path runs instead."""
    if bound is None or dtype == torch.float64 or s.d > CUDA_FUSED_MAX_HEAD_DIM or bound > INT8_MAX:
        return None
    bound = max(bound, 1)  # all-zero operands: any bound holds
    if s.d * s.N * bound ** 3 > INT32_MAX:  # |Q K^T V| <= d * N * bound^3 bounds every partial sum
        return None
    if not order_q_kv and s.d * bound * bound > INT8_MAX:
        return True  # the scores would not fit int8; Q (K^T V) gives the same integers
    return order_q_kv


def _heads_first(x: torch.Tensor, s: AttentionShape) -> torch.Tensor:
    """Float32 (float64 for float64) [T, B, h, N, d] view of an input in either layout."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(acc)
    return x if s.heads_split else x.reshape(s.T, s.B, s.heads, s.d, s.N).transpose(-1, -2)


def _to_layout(y: torch.Tensor, s: AttentionShape) -> torch.Tensor:
    return y if s.heads_split else y.transpose(-1, -2).reshape(s.T, s.B, s.heads * s.d, s.N)


def _products(q, k, v, order_q_kv: bool):
    if order_q_kv:
        return q @ (k.transpose(-1, -2) @ v)
    return (q @ k.transpose(-1, -2)) @ v


def _neuron_ops(backend: str):
    return forward_backward_ops("neuron", backend)


def _resting(x: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    return torch.full(x.shape[1:], cfg.v_reset if cfg.hard_reset else 0.0, dtype=x.dtype, device=x.device)


class SpikingSelfAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, s: AttentionShape, cfg: NeuronConfig, scale: float, order_q_kv: bool,
                bound: int | None, backend: str):
        kernel_order = fused_cuda_order(s, q.dtype, bound, order_q_kv) if backend == "cuda" else None
        if backend == "triton":
            out, spikes = torch.ops.spikeops.ssa_forward_triton(q, k, v, list(s[:5]) + [int(s.heads_split)],
                                                                 cfg.as_list(), scale, order_q_kv, bound or 0)
        elif kernel_order is not None:
            out, spikes = compiled_op("ssa_forward", "ssa")(q, k, v, list(s[:5]) + [int(s.heads_split)],
                                                            cfg.as_list(), scale, kernel_order, bound)
        else:
            x = (_to_layout(_products(*(_heads_first(t, s) for t in (q, k, v)), order_q_kv), s) * scale)
            x = x.reshape(s.T, -1).contiguous()
            forward_op, _ = _neuron_ops(backend)
            out, _, _, spikes = forward_op(x, _resting(x, cfg), None, cfg.as_list(), False)
            out, spikes = out.view(q.shape).to(q.dtype), spikes.view(q.shape)
        ctx.save_for_backward(q, k, v, spikes)
        ctx.s, ctx.cfg, ctx.scale, ctx.order_q_kv, ctx.backend = s, cfg, scale, order_q_kv, backend
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, spikes = ctx.saved_tensors
        s, scale = ctx.s, ctx.scale
        qh, kh, vh = (_heads_first(t, s) for t in (q, k, v))
        x = (_to_layout(_products(qh, kh, vh, ctx.order_q_kv), s) * scale).reshape(s.T, -1).contiguous()
        _, backward_op = _neuron_ops(ctx.backend)
        grad_x, _, _ = backward_op(grad_out.reshape(s.T, -1).to(x.dtype).contiguous(), None, None, x,
                                   _resting(x, ctx.cfg), spikes.reshape(s.T, -1), None, ctx.cfg.as_list(), False)
        grad_y = _heads_first(grad_x.view(q.shape) * scale, s)
        if ctx.order_q_kv:
            kv = kh.transpose(-1, -2) @ vh
            grad_q = grad_y @ kv.transpose(-1, -2)
            grad_kv = qh.transpose(-1, -2) @ grad_y
            grad_k, grad_v = vh @ grad_kv.transpose(-1, -2), kh @ grad_kv
        else:
            scores = qh @ kh.transpose(-1, -2)
            grad_scores = grad_y @ vh.transpose(-1, -2)
            grad_v = scores.transpose(-1, -2) @ grad_y
            grad_q, grad_k = grad_scores @ kh, grad_scores.transpose(-1, -2) @ qh
        grads = (_to_layout(g, s).to(q.dtype) for g in (grad_q, grad_k, grad_v))
        return (*grads, None, None, None, None, None, None)


def spiking_self_attention_fused(q, k, v, s: AttentionShape, cfg: NeuronConfig, scale: float, order: str,
                                 spike_operands: bool | None, backend: str):
    if backend == "triton" and q.dtype == torch.float64:
        raise TypeError("q: the 'triton' backend supports float32, float16 and bfloat16; use backend='cpu' or "
                        "'torch' for float64")
    if backend == "triton" and s.N * s.d >= 2**31:
        # kernels/ssa.py indexes inside one head's [N, d] slice in 32 bits (int64 tile offsets would
        # double its registers); the head's base offset is 64-bit.
        raise ValueError(f"q: the 'triton' SSA kernel needs one head's N*d < 2**31 elements, got N*d = "
                         f"{s.N}*{s.d} = {s.N * s.d}; use backend='cuda' or 'cpu'")
    q, k, v = (t.contiguous() for t in (q, k, v))
    bound = None
    if backend in ("triton", "cuda"):
        bound = 1 if spike_operands else (integer_bound(q, k, v) if spike_operands is None else None)
    return SpikingSelfAttentionFunction.apply(q, k, v, s, cfg, scale, pick_order(order, s), bound, backend)
