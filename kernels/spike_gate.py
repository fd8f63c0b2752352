"""Fused Triton kernels of the spiking-attention operators.

"Spike gate" kernels (Q-K token / channel attention, spike-driven self-attention): each program owns
BLOCK_M attention neurons for all T steps. Per step it reduces the neurons' R inputs (optionally the
product of two inputs), runs one LIF step from kernels/neuron_math.py with the membrane in registers,
and writes ``out = spike * gate`` over the same R positions. Backward is one launch too: per step in
reverse it reduces ``grad_out * gate`` to dL/dS, steps BPTT back through the surrogate, and writes
the input gradients. The index map (neuron m -> its R elements) is spikeops/ops/attention/layout.py's
Geometry; offsets are int64.

The spiking-self-attention kernel is in kernels/ssa.py.
"""
import torch
import triton
import triton.language as tl

from .neuron_math import fire, leaky_charge, reset, reset_grad, spike_grad

NUM_WARPS = 4
# Elements per [BLOCK_M, BLOCK_R] tile: 8 per thread. Each tensor a kernel touches costs a 64-bit
# pointer per element in registers, and backward touches five: larger tiles made ptxas spill.
TILE = 1024
NUM_STAGES = 1  # no software pipelining of the r-loops: prefetched tiles would double the live pointers
# Register cap of the forward kernel (.maxnreg): left to itself, ptxas fits the contiguous bf16 product
# forward into 72 registers on sm_90 and spills 8 bytes; the cap only changes register allocation.
FORWARD_MAXNREG = 128


@triton.jit
def _neuron_offsets(pid, M, L, stride_g, stride_l, BLOCK_M: tl.constexpr):
    m = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    base = (m // L) * stride_g + (m % L) * stride_l
    return m, m < M, base


@triton.jit
def spike_gate_forward_kernel(
    a_ptr, a2_ptr, gate_ptr, out_ptr, h_ptr, spikes_ptr,
    T, M, R, L, stride_g, stride_r, stride_l,
    tau, v_threshold, v_reset,
    HAS_A2: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD_RESET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
):
    m, m_mask, base = _neuron_offsets(tl.program_id(0), M, L, stride_g, stride_l, BLOCK_M)
    slice_size = tl.cast(M, tl.int64) * R
    if HARD_RESET:
        v_rest = v_reset
    else:
        v_rest = 0.0
    v = tl.zeros([BLOCK_M], dtype=tl.float32) + v_rest
    t_offset = slice_size * 0
    for t in range(T):
        acc = tl.zeros([BLOCK_M], dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            offs = t_offset + base[:, None] + r.to(tl.int64)[None, :] * stride_r
            mask = m_mask[:, None] & (r < R)[None, :]
            a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_A2:
                a = a * tl.load(a2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc += tl.sum(a, axis=1)
        h = leaky_charge(v, acc, 0.0, tau, v_rest, DECAY_INPUT, True)
        s = fire(h, v_threshold, 1.0, 0, False)
        v = reset(h, s, v_threshold, v_reset, HARD_RESET)
        state_at = tl.cast(M, tl.int64) * t + m
        tl.store(h_ptr + state_at, h, mask=m_mask)
        tl.store(spikes_ptr + state_at, s.to(tl.int8), mask=m_mask)
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            offs = t_offset + base[:, None] + r.to(tl.int64)[None, :] * stride_r
            mask = m_mask[:, None] & (r < R)[None, :]
            gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + offs, (s[:, None] * gate).to(out_ptr.dtype.element_ty), mask=mask)
        t_offset += slice_size


@triton.jit
def spike_gate_backward_kernel(
    grad_out_ptr, a_ptr, a2_ptr, gate_ptr, h_ptr, spikes_ptr, grad_a_ptr, grad_a2_ptr, grad_gate_ptr,
    T, M, R, L, stride_g, stride_r, stride_l,
    tau, v_threshold, v_reset, alpha,
    HAS_A2: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
):
    m, m_mask, base = _neuron_offsets(tl.program_id(0), M, L, stride_g, stride_l, BLOCK_M)
    slice_size = tl.cast(M, tl.int64) * R
    dh_dv = 1.0 - 1.0 / tau
    if DECAY_INPUT:
        dh_dx = 1.0 / tau
    else:
        dh_dx = 1.0
    grad_v = tl.zeros([BLOCK_M], dtype=tl.float32)
    t_offset = slice_size * T
    # Walk t = T-1 .. 0 by stepping 64-bit offsets down, so no time index is formed in 32 bits.
    state_offset = tl.cast(M, tl.int64) * T
    for _ in range(T):
        t_offset -= slice_size
        state_offset -= M
        state_at = state_offset + m
        s = tl.load(spikes_ptr + state_at, mask=m_mask, other=0).to(tl.float32)
        grad_s = tl.zeros([BLOCK_M], dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            offs = t_offset + base[:, None] + r.to(tl.int64)[None, :] * stride_r
            mask = m_mask[:, None] & (r < R)[None, :]
            go = tl.load(grad_out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            grad_s += tl.sum(go * gate, axis=1)
            tl.store(grad_gate_ptr + offs, (go * s[:, None]).to(grad_gate_ptr.dtype.element_ty), mask=mask)
        h = tl.load(h_ptr + state_at, mask=m_mask, other=0.0)
        ds_dh = spike_grad(h, v_threshold, alpha, 1.0, SURROGATE, 0)
        grad_h = grad_s * ds_dh + grad_v * reset_grad(h, s, ds_dh, v_threshold, v_reset, HARD_RESET, DETACH_RESET, 0)
        grad_x = grad_h * dh_dx
        grad_v = grad_h * dh_dv
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            offs = t_offset + base[:, None] + r.to(tl.int64)[None, :] * stride_r
            mask = m_mask[:, None] & (r < R)[None, :]
            if HAS_A2:
                a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                a2 = tl.load(a2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                tl.store(grad_a_ptr + offs, (grad_x[:, None] * a2).to(grad_a_ptr.dtype.element_ty), mask=mask)
                tl.store(grad_a2_ptr + offs, (grad_x[:, None] * a).to(grad_a2_ptr.dtype.element_ty), mask=mask)
            else:
                g = tl.zeros([BLOCK_M, BLOCK_R], dtype=tl.float32) + grad_x[:, None]
                tl.store(grad_a_ptr + offs, g.to(grad_a_ptr.dtype.element_ty), mask=mask)


def _blocks(geo):
    """Tile shape: the contiguous axis gets the wide side, so loads coalesce either way."""
    M, R, L, stride_g, stride_r, stride_l = geo
    if stride_r == 1:  # each neuron's inputs are contiguous (channel sums, or [.., N, d] token sums)
        block_r = min(128, triton.next_power_of_2(max(R, 1)))
        return max(1, TILE // block_r), block_r
    block_r = min(16, triton.next_power_of_2(max(R, 1)))
    return TILE // 16, block_r


def _lif_args(cfg):
    return dict(tau=cfg.tau, v_threshold=cfg.v_threshold, v_reset=cfg.v_reset)


def spike_gate_forward(a, a2, gate, geo, cfg):
    T = a.shape[0]
    M, R, L, stride_g, stride_r, stride_l = geo
    out = torch.empty_like(gate)
    h = torch.empty((T, M), dtype=torch.float32, device=a.device)
    spikes = torch.empty((T, M), dtype=torch.int8, device=a.device)
    if M == 0:
        return out, h, spikes
    block_m, block_r = _blocks(geo)
    spike_gate_forward_kernel[(triton.cdiv(M, block_m),)](
        a, a2 if a2 is not None else a, gate, out, h, spikes, T, M, R, L, stride_g, stride_r, stride_l,
        HAS_A2=a2 is not None, DECAY_INPUT=bool(cfg.decay_input), HARD_RESET=bool(cfg.hard_reset),
        BLOCK_M=block_m, BLOCK_R=block_r, num_warps=NUM_WARPS, num_stages=NUM_STAGES, maxnreg=FORWARD_MAXNREG,
        enable_fp_fusion=False, **_lif_args(cfg),
    )
    return out, h, spikes


def spike_gate_backward(grad_out, a, a2, gate, h, spikes, geo, cfg):
    T = a.shape[0]
    M, R, L, stride_g, stride_r, stride_l = geo
    grad_a = torch.empty_like(a)
    grad_a2 = torch.empty_like(a2) if a2 is not None else a.new_empty(0)
    grad_gate = torch.empty_like(gate)
    if M == 0:
        return grad_a, grad_a2, grad_gate
    block_m, block_r = _blocks(geo)
    spike_gate_backward_kernel[(triton.cdiv(M, block_m),)](
        grad_out, a, a2 if a2 is not None else a, gate, h, spikes, grad_a, grad_a2 if a2 is not None else grad_a,
        grad_gate, T, M, R, L, stride_g, stride_r, stride_l, alpha=cfg.alpha,
        HAS_A2=a2 is not None, DECAY_INPUT=bool(cfg.decay_input), HARD_RESET=bool(cfg.hard_reset),
        DETACH_RESET=bool(cfg.detach_reset), SURROGATE=int(cfg.surrogate),
        BLOCK_M=block_m, BLOCK_R=block_r, num_warps=NUM_WARPS, num_stages=NUM_STAGES, enable_fp_fusion=False, **_lif_args(cfg),
    )
    return grad_a, grad_a2, grad_gate


def aot_specs():
    """Every kernel of this module in float32 and bfloat16, with both tile shapes _blocks() picks (token
    sums across a [d, N] layout; contiguous sums), for ahead-of-time compilation and spill checks."""
    specs = []
    sizes = {name: "i32" for name in ("T", "M", "R", "L", "stride_g", "stride_r", "stride_l")}
    lif = {"tau": "fp32", "v_threshold": "fp32", "v_reset": "fp32"}
    tiles = {"strided": dict(BLOCK_M=TILE // 16, BLOCK_R=16), "contiguous": dict(BLOCK_M=TILE // 128, BLOCK_R=128)}
    for dtype in ("fp32", "bf16"):
        tensor = f"*{dtype}"
        for tile_name, tile in tiles.items():
            for has_a2 in (False, True):
                flags = dict(HAS_A2=has_a2, DECAY_INPUT=True, HARD_RESET=True, **tile)
                suffix = f"{'product_' if has_a2 else ''}{tile_name}_{dtype}"
                specs.append(dict(
                    name=f"spike_gate_forward_{suffix}", kernel=spike_gate_forward_kernel,
                    signature={"a_ptr": tensor, "a2_ptr": tensor, "gate_ptr": tensor, "out_ptr": tensor,
                               "h_ptr": "*fp32", "spikes_ptr": "*i8", **sizes, **lif},
                    constexprs=flags, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
                    options=dict(maxnreg=FORWARD_MAXNREG)))
                specs.append(dict(
                    name=f"spike_gate_backward_{suffix}", kernel=spike_gate_backward_kernel,
                    signature={"grad_out_ptr": tensor, "a_ptr": tensor, "a2_ptr": tensor, "gate_ptr": tensor,
                               "h_ptr": "*fp32", "spikes_ptr": "*i8", "grad_a_ptr": tensor, "grad_a2_ptr": tensor,
                               "grad_gate_ptr": tensor, **sizes, **lif, "alpha": "fp32"},
                    constexprs=dict(flags, DETACH_RESET=True, SURROGATE=0), num_warps=NUM_WARPS,
                    num_stages=NUM_STAGES))
    return specs
