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

from .._autograd import loop_vmap, recording_backward, reference_backward, unwrapped
from .._dispatch import compiled_op, forward_backward_ops, register_fake
from ..neuron.config import NeuronConfig
from . import naive
from .layout import AttentionShape

ORDERS = ("auto", "q_kv", "qk_v")


@torch.library.custom_op("spikeops::ssa_forward_triton", mutates_args=())
def _ssa_forward_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: list[int], cfg: list[float],
                        scale: float, order_q_kv: bool, integer_bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_ssa_call(q, k, v, shape, integer_bound)
    from ...kernels import ssa as ssa_kernels
    return ssa_kernels.ssa_forward(q, k, v, AttentionShape(*shape[:5], bool(shape[5])), NeuronConfig.from_list(cfg), scale,
                                     order_q_kv, integer_bound if integer_bound > 0 else None)


def _check_ssa_call(q, k, v, shape, integer_bound) -> None:
    """What csrc/ssa/ssa_cuda.cu::check_ssa_inputs checks, for the Triton op: every index the kernel forms lies
    inside q, k and v."""
    for name, x in (("k", k), ("v", v)):
        if x.shape != q.shape or x.dtype != q.dtype or x.device != q.device or not x.is_contiguous():
            raise ValueError(f"ssa_forward: {name}: expected a contiguous tensor of q's shape {tuple(q.shape)}, dtype "
                             f"{q.dtype} and device {q.device}, got {tuple(x.shape)} {x.dtype} on {x.device}")
    if not q.is_contiguous():
        raise ValueError(f"ssa_forward: q: expected a contiguous tensor, got strides {q.stride()}")
    if len(shape) != 6:
        raise ValueError(f"ssa_forward: shape: expected (T, B, heads, N, d, heads_split), got {list(shape)}")
    T, B, heads, N, d, split = (int(x) for x in shape)
    if T < 1 or B < 0 or heads < 1 or N < 0 or d < 1 or split not in (0, 1) or T * B * heads * N * d != q.numel():
        raise ValueError(f"ssa_forward: shape: expected (T >= 1, B, heads >= 1, N, d >= 1, heads_split 0 or 1) with "
                         f"T*B*heads*N*d = the {q.numel()} elements of q (shape {tuple(q.shape)}), got {list(shape)}")
    if not 0 <= integer_bound <= INT8_MAX:
        raise ValueError(f"ssa_forward: integer_bound: expected 0 (real operands) to {INT8_MAX}, got {integer_bound}")


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
    bound = 0.0
    for x in map(unwrapped, tensors):
        if x.numel() == 0:
            continue
        if not torch.equal(x, torch.round(x)):  # NaN is not equal to itself: real-valued
            return None
        largest = x.abs().max().item()
        if not largest <= INT8_MAX:  # Inf (round(Inf) == Inf) or too large for int8: real-valued arithmetic
            return None
        bound = max(bound, largest)
    return int(bound)


def check_binary_operands(**tensors: torch.Tensor) -> None:
    """``spike_operands=True`` promises binary {0, 1} operands; verified in debug mode (spikeops/ops/promises.py),
    where a broken promise raises ValueError naming the operand instead of giving backend-dependent results
    (the int8 path truncates other values, the real-valued paths use them)."""
    tensors = {name: unwrapped(x) for name, x in tensors.items()}
    flags = torch.stack([((x != 0) & (x != 1)).any() for x in tensors.values()]).tolist() if tensors else []
    for (name, x), bad in zip(tensors.items(), flags):
        if bad:
            value = x[(x != 0) & (x != 1)].flatten()[0].item()
            raise ValueError(f"{name}: spike_operands=True promises binary spikes in {{0, 1}}, got other values such "
                             f"as {value}; pass spike_operands=None (detect) or False (real-valued)")


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
    def forward(q, k, v, s: AttentionShape, cfg: NeuronConfig, scale: float, order_q_kv: bool,
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
            out, _, _ = forward_op(x, _resting(x, cfg), None, cfg.as_list(), False, False)
            out = out.view(q.shape)
            out, spikes = out.to(q.dtype), out.to(torch.int8)
        return out, spikes

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, s, cfg, scale, order_q_kv, _bound, backend = inputs
        ctx.save_for_backward(q, k, v, output[1])
        ctx.s, ctx.cfg, ctx.scale, ctx.order_q_kv, ctx.backend = s, cfg, scale, order_q_kv, backend
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def vmap(info, in_dims, *args):
        return loop_vmap(SpikingSelfAttentionFunction, info, in_dims, *args)

    @staticmethod
    def backward(ctx, grad_out, _grad_spikes):
        q, k, v, spikes = ctx.saved_tensors
        s, scale = ctx.s, ctx.scale
        if recording_backward(grad_out, q):  # double backward or torch.func: the reference (spikeops/ops/_autograd.py)
            order = "q_kv" if ctx.order_q_kv else "qk_v"
            grads = reference_backward(lambda q_, k_, v_: naive.spiking_self_attention(q_, k_, v_, s, ctx.cfg, scale, order),
                                       (q, k, v), (grad_out,), ctx.needs_input_grad[:3])
            return (*grads, None, None, None, None, None, None)
        qh, kh, vh = (_heads_first(t, s) for t in (q, k, v))
        x = (_to_layout(_products(qh, kh, vh, ctx.order_q_kv), s) * scale).reshape(s.T, -1).contiguous()
        _, backward_op = _neuron_ops(ctx.backend)
        grad_x, _, _ = backward_op(grad_out.reshape(s.T, -1).to(x.dtype).contiguous(), None, None, x,
                                   _resting(x, ctx.cfg), None, ctx.cfg.as_list(), False)
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
    return SpikingSelfAttentionFunction.apply(q, k, v, s, cfg, scale, pick_order(order, s), bound, backend)[0]
