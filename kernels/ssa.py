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

from .neuron_math import fire, leaky_charge, reset

NUM_WARPS = 8  # 64x64 float32 membrane, product and K^T V tiles: 8 warps keep them in registers
# Software pipelining (num_stages > 1) keeps prefetched float tiles live across the token loop and made
# ptxas spill (sm_80/sm_90, d = 64); the T-loop of many programs hides the load latency instead.
NUM_STAGES = 1
FP16_EXACT_INTEGER = 2048  # largest integer such that every integer up to it is exact in float16


@triton.jit
def _load_tile(ptr, tokens, cols, N, D, stride_n, stride_d):
    # int32 offsets inside one head's [N, d] slice (ptr already points at it with an int64 base):
    # int64 tile offsets would double the registers the tiles need.
    offs = tokens[:, None] * stride_n + cols[None, :] * stride_d
    mask = (tokens < N)[:, None] & (cols < D)[None, :]
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _any_nonzero(a, b):
    return (tl.max(tl.abs(a)) != 0) & (tl.max(tl.abs(b)) != 0)


@triton.jit
def _accumulate(acc, a, b, INTEGER: tl.constexpr, SMALL: tl.constexpr):
    """acc + a @ b for tiles holding integers. INTEGER: int8 operands, int32 accumulator; SMALL:
    float16 operands (exact integers <= 2048), float32 accumulator; otherwise float32 IEEE."""
    if INTEGER:
        acc = tl.dot(a.to(tl.int8), b.to(tl.int8), acc=acc, out_dtype=tl.int32)
    elif SMALL:
        acc = tl.dot(a.to(tl.float16), b.to(tl.float16), acc=acc, out_dtype=tl.float32)
    else:
        acc = tl.dot(a, b, acc=acc, input_precision="ieee")
    return acc


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
    if HARD_RESET:
        v_rest = v_reset
    else:
        v_rest = 0.0
    v = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32) + v_rest
    for t in range(T):
        base = head + t * tl.cast(slice_size, tl.int64)
        if ORDER_Q_KV:
            if INTEGER:
                kv = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.int32)
            else:
                kv = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
            for n0 in range(0, N, BLOCK_N):
                tokens = n0 + tl.arange(0, BLOCK_N)
                k = _load_tile(k_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                vv = _load_tile(v_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                if INTEGER:
                    # Spikes are sparse: a tile without any K (or V) spike adds nothing to K^T V. Only
                    # integer operands skip, as they hold no Inf / NaN that 0 * x would turn into NaN.
                    if _any_nonzero(k, vv):
                        # narrow before the transpose, so the layout change moves bytes, not floats
                        kv = _accumulate(kv, tl.trans(k.to(tl.int8)), vv.to(tl.int8), INTEGER, False)
                else:
                    kv = _accumulate(kv, tl.trans(k), vv, INTEGER, False)
            q = _load_tile(q_ptr + base, rows, cols, N, D, stride_n, stride_d)  # loaded late: fewer live registers
            y = _accumulate(tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32), q, kv.to(tl.float32), False, SECOND_FP16)
        else:
            q = _load_tile(q_ptr + base, rows, cols, N, D, stride_n, stride_d)
            if INTEGER:
                q = q.to(tl.int8)
            y = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
            for n0 in range(0, N, BLOCK_N):
                tokens = n0 + tl.arange(0, BLOCK_N)
                k = _load_tile(k_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                vv = _load_tile(v_ptr + base, tokens, cols, N, D, stride_n, stride_d)
                if INTEGER:
                    if _any_nonzero(k, vv):  # an all-zero K or V tile adds nothing to y (as in q_kv)
                        scores = _accumulate(tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32), q, tl.trans(k), True, False)
                        y = _accumulate(y, scores.to(tl.float32), vv, False, SECOND_FP16)
                else:
                    scores = _accumulate(tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), q, tl.trans(k), False, False)
                    y = _accumulate(y, scores, vv, False, False)
        h = leaky_charge(v, y * scale, 0.0, tau, v_rest, DECAY_INPUT, True)
        s = fire(h, v_threshold, 1.0, 0, False)
        v = reset(h, s, v_threshold, v_reset, HARD_RESET)
        out_offs = rows[:, None] * stride_n + cols[None, :] * stride_d
        out_mask = (rows < N)[:, None] & (cols < D)[None, :]
        tl.store(out_ptr + base + out_offs, s.to(out_ptr.dtype.element_ty), mask=out_mask)
        tl.store(spikes_ptr + base + out_offs, s.to(tl.int8), mask=out_mask)


def _block_m(integer: bool, block_d: int) -> int:
    """Query rows per program. Real-valued float32 dots run as FMA loops on sm_80 and need half the
    rows to stay in registers; int8 / float16 tensor-core dots fit 64 rows at d <= 64."""
    return 64 if integer and block_d <= 64 else 32


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
    block_d = max(32, triton.next_power_of_2(D))  # int8 tensor-core dots need a reduction depth >= 32
    block_m = _block_m(integer, block_d)
    block_n = 32
    grid = (triton.cdiv(N, block_m), B * heads)
    ssa_forward_kernel[grid](
        q, k, v, out, spikes, T, N, D, B * heads * N * D, stride_n, stride_d, float(scale),
        cfg.tau, cfg.v_threshold, cfg.v_reset,
        ORDER_Q_KV=bool(order_q_kv), INTEGER=integer, SECOND_FP16=bool(second_fp16),
        DECAY_INPUT=bool(cfg.decay_input), HARD_RESET=bool(cfg.hard_reset),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        enable_fp_fusion=False,
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
                                    HARD_RESET=True, BLOCK_M=_block_m(integer, 64), BLOCK_N=32, BLOCK_D=64),
                    num_warps=NUM_WARPS, num_stages=NUM_STAGES))
    return specs
