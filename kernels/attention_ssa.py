"""Fused Triton forward of spiking self-attention, SN(Q K^T V * scale) (Spikformer SSA, SDT-v2).

One program owns BLOCK_M query tokens of one (batch, head) for all T steps; the [BLOCK_M, d] membrane
stays in registers and the LIF step (kernels/neuron_math.py) is the epilogue of each step's products.
Order Q (K^T V): K^T V is accumulated over token tiles, then multiplied by the Q tile; nothing [N, N]
is formed. Order (Q K^T) V: flash-style, one [BLOCK_M, BLOCK_N] score tile at a time.

On integer operands (spikes, SEW spike counts) the products are exact integers: the first product runs
as an int8 x int8 -> int32 tensor-core dot, the second in float16 with float32 accumulation, which is
exact while the intermediate integers stay <= 2048 (the host checks the bound and otherwise uses a
float32 IEEE dot). Real-valued operands use float32 IEEE dots throughout.
"""
import torch
import triton
import triton.language as tl

from .neuron_math import charge, fire, reset

NUM_WARPS = 4
FP16_EXACT_INTEGER = 2048  # largest integer such that every integer up to it is exact in float16


@triton.jit
def _load_tile(ptr, tokens, cols, N, D, stride_n, stride_d):
    offs = tokens.to(tl.int64)[:, None] * stride_n + cols.to(tl.int64)[None, :] * stride_d
    mask = (tokens < N)[:, None] & (cols < D)[None, :]
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _product(a, b, INTEGER: tl.constexpr, SMALL: tl.constexpr):
    """a @ b for tiles holding integers (INTEGER: first-stage int8 operands; SMALL: float16-exact)."""
    if INTEGER:
        c = tl.dot(a.to(tl.int8), b.to(tl.int8), out_dtype=tl.int32).to(tl.float32)
    elif SMALL:
        c = tl.dot(a.to(tl.float16), b.to(tl.float16), out_dtype=tl.float32)
    else:
        c = tl.dot(a, b, input_precision="ieee")
    return c


@triton.jit
def ssa_forward_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, spikes_ptr,
    T, N, D, slice_size, stride_n, stride_d, scale, tau, v_threshold, v_reset,
    ORDER_Q_KV: tl.constexpr, INTEGER: tl.constexpr, SECOND_FP16: tl.constexpr,
    DECAY_INPUT: tl.constexpr, HARD_RESET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    head = tl.program_id(1).to(tl.int64) * N * D
    out_offs = rows.to(tl.int64)[:, None] * stride_n + cols.to(tl.int64)[None, :] * stride_d
    out_mask = (rows < N)[:, None] & (cols < D)[None, :]
    if HARD_RESET:
        v_rest = v_reset
    else:
        v_rest = 0.0
    v = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32) + v_rest
    for t in range(T):
        base = head + t * tl.cast(slice_size, tl.int64)
        q = _load_tile(q_ptr + base, rows, cols, N, D, stride_n, stride_d)
        if ORDER_Q_KV:
            kv = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
            for n0 in range(0, N, BLOCK_N):
                tokens = n0 + tl.arange(0, BLOCK_N)
                k = _load_tile(k_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                vv = _load_tile(v_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                kv += _product(tl.trans(k), vv, INTEGER, False)
            y = _product(q, kv, False, SECOND_FP16)
        else:
            y = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
            for n0 in range(0, N, BLOCK_N):
                tokens = n0 + tl.arange(0, BLOCK_N)
                k = _load_tile(k_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                vv = _load_tile(v_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                scores = _product(q, tl.trans(k), INTEGER, False)
                y += _product(scores, vv, False, SECOND_FP16)
        h = charge(v, y * scale, 0.0, tau, v_rest, False, DECAY_INPUT, True)
        s = fire(h, v_threshold, 1.0, 0, False)
        v = reset(h, s, v_threshold, v_reset, HARD_RESET)
        tl.store(out_ptr + base + out_offs, s.to(out_ptr.dtype.element_ty), mask=out_mask)
        tl.store(spikes_ptr + base + out_offs, s.to(tl.int8), mask=out_mask)


def ssa_forward(q, k, v, shape, cfg, scale, order_q_kv, integer_bound):
    """q, k, v contiguous in the input layout; ``integer_bound``: max |value| of integer operands, or None
    for real-valued ones. Returns (spikes like q, spikes as int8 like q)."""
    T, B, heads, N, D = shape.T, shape.B, shape.heads, shape.N, shape.d
    out = torch.empty_like(q)
    spikes = torch.empty(q.shape, dtype=torch.int8, device=q.device)
    if q.numel() == 0:
        return out, spikes
    stride_n, stride_d = (D, 1) if shape.heads_split else (1, N)
    integer = integer_bound is not None
    # Largest intermediate integer: K^T V entries (q_kv) or Q K^T entries (qk_v).
    inner = N if order_q_kv else D
    second_fp16 = integer and inner * integer_bound * integer_bound <= FP16_EXACT_INTEGER
    block_d = max(16, triton.next_power_of_2(D))
    block_m = 64 if block_d <= 64 else 32
    block_n = 32
    grid = (triton.cdiv(N, block_m), B * heads)
    ssa_forward_kernel[grid](
        q, k, v, out, spikes, T, N, D, B * heads * N * D, stride_n, stride_d, float(scale),
        cfg.tau, cfg.v_threshold, cfg.v_reset,
        ORDER_Q_KV=bool(order_q_kv), INTEGER=integer, SECOND_FP16=bool(second_fp16),
        DECAY_INPUT=bool(cfg.decay_input), HARD_RESET=bool(cfg.hard_reset),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=NUM_WARPS, enable_fp_fusion=False,
    )
    return out, spikes


def aot_specs():
    """The SSA kernel in float32 and bfloat16, both orders, integer (int8 dots) and real operands, at the
    tile sizes ssa_forward() picks for d = 64 (Spikformer / QKFormer stage 3)."""
    specs = []
    sizes = {"T": "i32", "N": "i32", "D": "i32", "slice_size": "i32", "stride_n": "i32", "stride_d": "i32",
             "scale": "fp32", "tau": "fp32", "v_threshold": "fp32", "v_reset": "fp32"}
    for dtype in ("fp32", "bf16"):
        tensor = f"*{dtype}"
        for order_q_kv in (True, False):
            for integer in (True, False):
                specs.append(dict(
                    name=f"ssa_forward_{'q_kv' if order_q_kv else 'qk_v'}_{'int8' if integer else 'real'}_{dtype}",
                    kernel=ssa_forward_kernel,
                    signature={"q_ptr": tensor, "k_ptr": tensor, "v_ptr": tensor, "out_ptr": tensor,
                               "spikes_ptr": "*i8", **sizes},
                    constexprs=dict(ORDER_Q_KV=order_q_kv, INTEGER=integer, SECOND_FP16=integer, DECAY_INPUT=True,
                                    HARD_RESET=True, BLOCK_M=64, BLOCK_N=32, BLOCK_D=64),
                    num_warps=NUM_WARPS))
    return specs
