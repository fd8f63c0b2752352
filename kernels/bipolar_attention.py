"""Bipolar self-attention in Triton, FlashAttention style: Y = norm(scale * Q K^T) V with the
[N, N] scores living only in registers, one key block at a time, with an online row maximum and
row total. Shiftmax, the base-2 softmax (its smooth variant) and softmax are one code path: the
numerator is exp2(c * (A - m)) with c = 1 (Shiftmax) or log2(e) (softmax), and Shiftmax's
denominator is the row total rounded up to a power of two, read from the float's exponent bits.

Q and K are ternary spikes: their product runs as an int8 x int8 -> int32 dot, exact integer
arithmetic. The formulas (and the straight-through backward) are spikeops/ops/bipolar_attention/naive.py's.

Saved per query row for the backward: ``lse`` = log2 of the row normaliser in exponent units
(P_ij = exp2(c * A_ij - lse_i)) and ``rowsum`` = r_i = Z_i / D_i.
"""
import torch
import triton
import triton.language as tl

NORM_NONE = 0
NORM_EXP = 1  # shiftmax and softmax: exponent scale c picks the base
LN2 = 0.6931471805599453
LOG2E = 1.4426950408889634
# Tile sizes and warps per dot precision (HALF_DOT), chosen so ptxas spills nothing on sm_80 and sm_90
# (aot_specs / benchmarks.static_gpu). IEEE float32 dots run on the FMA units with whole operand rows in
# registers: the forward's 64x64 tiles spill on sm_80 (32x32 ones do not), and the key-side backward
# spills with 4 warps even at 32-row tiles (8 warps halve its per-thread tiles). bfloat16 dots run on
# tensor cores. The backward holds five [block, block] / [block, d] tiles at once: 32-row tiles.
CONFIGS = {
    False: dict(forward_block=32, backward_block=32, forward_warps=4, query_warps=4, key_warps=8),
    True: dict(forward_block=64, backward_block=32, forward_warps=4, query_warps=4, key_warps=4),
}


@triton.jit
def pow2_ceil_log2(z):
    """ceil(log2 z) for normal positive float32 z, exactly: the exponent field, plus one unless the
    mantissa is zero (z already a power of two)."""
    bits = z.to(tl.int32, bitcast=True)
    exponent = ((bits >> 23) & 255) - 127
    return exponent + ((bits & 0x7FFFFF) != 0).to(tl.int32)


@triton.jit
def _head_offsets(N, D, DV):
    """Program axis 1 is the (batch, head) slice: its index and int64 element offsets into q/k and v."""
    head = tl.program_id(1).to(tl.int64)
    n = tl.cast(N, tl.int64)
    return head, n, head * n * D, head * n * DV


@triton.jit
def _load_ternary(ptr, rows, row_mask, dcols, D):
    return tl.load(ptr + rows[:, None] * D + dcols[None, :], mask=row_mask[:, None] & (dcols[None, :] < D),
                   other=0.0).to(tl.int8)


@triton.jit
def _ternary_scores(q_i8, k_ptr, k_offs, k_mask, scale):
    k_i8 = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0).to(tl.int8)
    return tl.dot(q_i8, tl.trans(k_i8), out_dtype=tl.int32).to(tl.float32) * scale


@triton.jit
def _matmul(a, b, HALF_DOT: tl.constexpr):
    """a @ b for float32 blocks: in bfloat16 on tensor cores for half inputs, IEEE float32 otherwise."""
    if HALF_DOT:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a, b, input_precision="ieee")
    return out


@triton.jit
def bipolar_attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, y_ptr, lse_ptr, rowsum_ptr,
    N, D, DV, scale, exp_scale,
    NORM: tl.constexpr, POW2_DENOMINATOR: tl.constexpr, HALF_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    head, n, qk_base, v_base = _head_offsets(N, D, DV)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    dcols = tl.arange(0, BLOCK_D)
    vcols = tl.arange(0, BLOCK_DV)
    row_mask = rows < N
    q_i8 = _load_ternary(q_ptr + qk_base, rows, row_mask, dcols, D)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_total = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N).to(tl.int64)
        key_mask = keys < N
        scores = _ternary_scores(q_i8, k_ptr + qk_base, keys[:, None] * D + dcols[None, :],
                                 key_mask[:, None] & (dcols[None, :] < D), scale)
        v = tl.load(v_ptr + v_base + keys[:, None] * DV + vcols[None, :],
                    mask=key_mask[:, None] & (vcols[None, :] < DV), other=0.0).to(tl.float32)
        if NORM == 0:
            acc += _matmul(tl.where(key_mask[None, :], scores, 0.0), v, HALF_DOT)
        else:
            exponent = tl.where(key_mask[None, :], scores * exp_scale, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(exponent, axis=1))
            rescale = tl.exp2(row_max - new_max)  # an exact power of two for integer Shiftmax scores
            numerator = tl.exp2(exponent - new_max[:, None])
            row_total = row_total * rescale + tl.sum(numerator, axis=1)
            acc = acc * rescale[:, None] + _matmul(numerator, v, HALF_DOT)
            row_max = new_max
    if NORM == 0:
        y = acc
    else:
        if POW2_DENOMINATOR:
            log2_denominator = pow2_ceil_log2(row_total).to(tl.float32)
            denominator = tl.exp2(log2_denominator)
        else:
            denominator = row_total
            log2_denominator = tl.log2(row_total)
        y = acc / denominator[:, None]
        tl.store(lse_ptr + head * n + rows, row_max + log2_denominator, mask=row_mask)
        tl.store(rowsum_ptr + head * n + rows, row_total / denominator, mask=row_mask)
    tl.store(y_ptr + v_base + rows[:, None] * DV + vcols[None, :], y.to(y_ptr.dtype.element_ty),
             mask=row_mask[:, None] & (vcols[None, :] < DV))


@triton.jit
def _score_grad(scores, key_mask, lse, delta, dprobs, exp_scale, NORM: tl.constexpr):
    """(P, dL/dA) for one [rows, keys] block; the Shiftmax form is the straight-through one."""
    if NORM == 0:
        probs = tl.where(key_mask[None, :], scores, 0.0)
        dscores = dprobs
    else:
        probs = tl.exp2(tl.where(key_mask[None, :], scores * exp_scale, float("-inf")) - lse[:, None])
        dscores = probs * (dprobs - delta[:, None]) * (exp_scale * 0.6931471805599453)
    return probs, tl.where(key_mask[None, :], dscores, 0.0)


@triton.jit
def bipolar_attention_backward_query_kernel(
    q_ptr, k_ptr, v_ptr, y_ptr, dy_ptr, lse_ptr, rowsum_ptr, dq_ptr, delta_ptr,
    N, D, DV, scale, exp_scale,
    NORM: tl.constexpr, HALF_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    # dQ for a block of query rows, and delta_i = sum_c dY_ic Y_ic / r_i for the key-side kernel.
    head, n, qk_base, v_base = _head_offsets(N, D, DV)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    dcols = tl.arange(0, BLOCK_D)
    vcols = tl.arange(0, BLOCK_DV)
    row_mask = rows < N
    q_i8 = _load_ternary(q_ptr + qk_base, rows, row_mask, dcols, D)
    out_mask = row_mask[:, None] & (vcols[None, :] < DV)
    dy = tl.load(dy_ptr + v_base + rows[:, None] * DV + vcols[None, :], mask=out_mask, other=0.0).to(tl.float32)
    if NORM == 0:
        lse = tl.zeros([BLOCK_M], dtype=tl.float32)
        delta = lse
    else:
        y = tl.load(y_ptr + v_base + rows[:, None] * DV + vcols[None, :], mask=out_mask, other=0.0).to(tl.float32)
        lse = tl.load(lse_ptr + head * n + rows, mask=row_mask, other=0.0)
        rowsum = tl.load(rowsum_ptr + head * n + rows, mask=row_mask, other=1.0)
        delta = tl.sum(dy * y, axis=1) / rowsum
        tl.store(delta_ptr + head * n + rows, delta, mask=row_mask)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N).to(tl.int64)
        key_mask = keys < N
        k_offs = keys[:, None] * D + dcols[None, :]
        k_mask = key_mask[:, None] & (dcols[None, :] < D)
        scores = _ternary_scores(q_i8, k_ptr + qk_base, k_offs, k_mask, scale)
        v = tl.load(v_ptr + v_base + keys[:, None] * DV + vcols[None, :],
                    mask=key_mask[:, None] & (vcols[None, :] < DV), other=0.0).to(tl.float32)
        dprobs = _matmul(dy, tl.trans(v), HALF_DOT)
        _, dscores = _score_grad(scores, key_mask, lse, delta, dprobs, exp_scale, NORM)
        k = tl.load(k_ptr + qk_base + k_offs, mask=k_mask, other=0.0).to(tl.float32)
        dq += _matmul(dscores, k, HALF_DOT)
    tl.store(dq_ptr + qk_base + rows[:, None] * D + dcols[None, :], (dq * scale).to(dq_ptr.dtype.element_ty),
             mask=row_mask[:, None] & (dcols[None, :] < D))


@triton.jit
def bipolar_attention_backward_key_kernel(
    q_ptr, k_ptr, v_ptr, dy_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    N, D, DV, scale, exp_scale,
    NORM: tl.constexpr, HALF_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    # dK and dV for a block of keys, sweeping all query blocks (the transposed roles of the query kernel).
    head, n, qk_base, v_base = _head_offsets(N, D, DV)
    keys = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    dcols = tl.arange(0, BLOCK_D)
    vcols = tl.arange(0, BLOCK_DV)
    key_mask = keys < N
    k_offs = keys[:, None] * D + dcols[None, :]
    k_mask = key_mask[:, None] & (dcols[None, :] < D)
    v_mask = key_mask[:, None] & (vcols[None, :] < DV)
    v = tl.load(v_ptr + v_base + keys[:, None] * DV + vcols[None, :], mask=v_mask, other=0.0).to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    for start in range(0, N, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M).to(tl.int64)
        row_mask = rows < N
        q_offs = rows[:, None] * D + dcols[None, :]
        q_mask = row_mask[:, None] & (dcols[None, :] < D)
        q = tl.load(q_ptr + qk_base + q_offs, mask=q_mask, other=0.0)
        scores = _ternary_scores(q.to(tl.int8), k_ptr + qk_base, k_offs, k_mask, scale)
        dy = tl.load(dy_ptr + v_base + rows[:, None] * DV + vcols[None, :],
                     mask=row_mask[:, None] & (vcols[None, :] < DV), other=0.0).to(tl.float32)
        if NORM == 0:
            lse = tl.zeros([BLOCK_M], dtype=tl.float32)
            delta = lse
        else:
            lse = tl.load(lse_ptr + head * n + rows, mask=row_mask, other=0.0)
            delta = tl.load(delta_ptr + head * n + rows, mask=row_mask, other=0.0)
        dprobs = _matmul(dy, tl.trans(v), HALF_DOT)
        probs, dscores = _score_grad(scores, key_mask, lse, delta, dprobs, exp_scale, NORM)
        probs = tl.where(row_mask[:, None], probs, 0.0)
        dscores = tl.where(row_mask[:, None], dscores, 0.0)
        dv += _matmul(tl.trans(probs), dy, HALF_DOT)
        dk += _matmul(tl.trans(dscores), q.to(tl.float32), HALF_DOT)
    tl.store(dk_ptr + qk_base + k_offs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=k_mask)
    tl.store(dv_ptr + v_base + keys[:, None] * DV + vcols[None, :], dv.to(dv_ptr.dtype.element_ty), mask=v_mask)


# ---------------------------------------------------------------- launchers
def _blocks(D, DV, rows):
    # int8 tensor-core dots need a reduction depth of at least 32; padding columns are masked zeros.
    return dict(BLOCK_M=rows, BLOCK_N=rows, BLOCK_D=max(32, triton.next_power_of_2(D)),
                BLOCK_DV=max(16, triton.next_power_of_2(DV)))


def _norm_flags(norm):
    return (NORM_NONE, 1.0) if norm == "none" else (NORM_EXP, 1.0 if norm == "shiftmax" else LOG2E)


def _half_dot(x):
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)


def attention_forward(q, k, v, scale, norm, pow2_denominator):
    """q, k [H, N, D], v [H, N, DV] contiguous -> (y [H, N, DV], lse [H, N] f32, rowsum [H, N] f32)."""
    H, N, D = q.shape
    DV = v.shape[2]
    y = torch.empty_like(v)
    lse = torch.empty((H, N), dtype=torch.float32, device=q.device)
    rowsum = torch.ones((H, N), dtype=torch.float32, device=q.device)
    if H * N == 0:
        return y, lse, rowsum
    norm_code, exp_scale = _norm_flags(norm)
    half = _half_dot(q)
    cfg = CONFIGS[half]
    bipolar_attention_forward_kernel[(triton.cdiv(N, cfg["forward_block"]), H)](
        q, k, v, y, lse, rowsum, N, D, DV, float(scale), exp_scale,
        NORM=norm_code, POW2_DENOMINATOR=bool(pow2_denominator and norm == "shiftmax"), HALF_DOT=half,
        num_warps=cfg["forward_warps"], enable_fp_fusion=False, **_blocks(D, DV, cfg["forward_block"]),
    )
    return y, lse, rowsum


def attention_backward(dy, q, k, v, y, lse, rowsum, scale, norm):
    H, N, D = q.shape
    DV = v.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if H * N == 0:
        return dq, dk, dv
    delta = torch.empty((H, N), dtype=torch.float32, device=q.device)
    norm_code, exp_scale = _norm_flags(norm)
    half = _half_dot(q)
    cfg = CONFIGS[half]
    common = dict(NORM=norm_code, HALF_DOT=half, enable_fp_fusion=False, **_blocks(D, DV, cfg["backward_block"]))
    grid = (triton.cdiv(N, cfg["backward_block"]), H)
    bipolar_attention_backward_query_kernel[grid](
        q, k, v, y, dy, lse, rowsum, dq, delta, N, D, DV, float(scale), exp_scale,
        num_warps=cfg["query_warps"], **common)
    bipolar_attention_backward_key_kernel[grid](
        q, k, v, dy, lse, delta, dk, dv, N, D, DV, float(scale), exp_scale, num_warps=cfg["key_warps"], **common)
    return dq, dk, dv


def aot_specs():
    """Every kernel of this module in float32 and bfloat16 with the CONFIGS the launchers use (D = DV = 64),
    for ahead-of-time compilation checks."""
    specs = []
    for dtype, half in (("fp32", False), ("bf16", True)):
        tensor = f"*{dtype}"
        sizes = {"N": "i32", "D": "i32", "DV": "i32", "scale": "fp32", "exp_scale": "fp32"}
        cfg = CONFIGS[half]
        blocks = _blocks(64, 64, cfg["forward_block"])
        backward_blocks = _blocks(64, 64, cfg["backward_block"])
        for norm in (NORM_NONE, NORM_EXP):
            specs.append(dict(
                name=f"bipolar_attention_forward_norm{norm}_{dtype}", kernel=bipolar_attention_forward_kernel,
                signature={"q_ptr": tensor, "k_ptr": tensor, "v_ptr": tensor, "y_ptr": tensor,
                           "lse_ptr": "*fp32", "rowsum_ptr": "*fp32", **sizes},
                constexprs=dict(NORM=norm, POW2_DENOMINATOR=norm == NORM_EXP, HALF_DOT=half, **blocks),
                num_warps=cfg["forward_warps"]))
            specs.append(dict(
                name=f"bipolar_attention_backward_query_norm{norm}_{dtype}",
                kernel=bipolar_attention_backward_query_kernel,
                signature={"q_ptr": tensor, "k_ptr": tensor, "v_ptr": tensor, "y_ptr": tensor, "dy_ptr": tensor,
                           "lse_ptr": "*fp32", "rowsum_ptr": "*fp32", "dq_ptr": tensor, "delta_ptr": "*fp32",
                           **sizes},
                constexprs=dict(NORM=norm, HALF_DOT=half, **backward_blocks), num_warps=cfg["query_warps"]))
            specs.append(dict(
                name=f"bipolar_attention_backward_key_norm{norm}_{dtype}",
                kernel=bipolar_attention_backward_key_kernel,
                signature={"q_ptr": tensor, "k_ptr": tensor, "v_ptr": tensor, "dy_ptr": tensor,
                           "lse_ptr": "*fp32", "delta_ptr": "*fp32", "dk_ptr": tensor, "dv_ptr": tensor, **sizes},
                constexprs=dict(NORM=norm, HALF_DOT=half, **backward_blocks), num_warps=cfg["key_warps"]))
    return specs
