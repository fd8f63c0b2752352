"""Fused multi-step neuron in Triton: each program owns BLOCK adjacent neurons for all T steps, so
loads and stores are contiguous row segments and the membrane stays in registers. Offsets are
int64 so tensors past 2**31 elements index correctly. Half-precision inputs are converted to
float32 right after loading (the interpreter mis-computes bf16 arithmetic otherwise)."""
import torch
import triton
import triton.language as tl

from .neuron_math import (DIVIDE_BY_TAU, MULTIPLY_LEAK, charge, charge_grad_leak, charge_grad_v, charge_grad_x, fire,
                          LAW_PARAMS, V_REST, law_params, reset, reset_grad, spike_grad)

BLOCK = 1024  # / 128 threads: 8 contiguous neurons a thread -> 16-byte fp16/bf16, 2x16-byte fp32 accesses
NUM_WARPS = 4
# The backward holds CHUNK steps of H in registers for each of its neurons, and the compiler keeps each
# step's spike and reset terms live beside H (it reuses them from the forward recompute), so it owns
# half as many neurons a thread (8-byte bf16, 16-byte fp32 accesses): 80-95 registers at CHUNK = 4, no
# spills, where 8 steps spill (benchmarks/static_gpu.py). T <= CHUNK reads x once; longer sequences
# rebuild each earlier chunk's starting membrane from v0 (T^2 / 2 CHUNK extra steps) rather than store H.
BACKWARD_BLOCK = 512
CHUNK = 4
# The launches pass enable_fp_fusion=False: without FMA contraction every backend rounds exactly like the
# reference, so spikes agree bit for bit.


@triton.jit
def _membrane_offsets(offs, SHARED_V0: tl.constexpr):
    """Where each neuron's initial membrane is: its own, or the one value v0 holds for all (SHARED_V0)."""
    if SHARED_V0:
        offs = offs * 0
    return offs


@triton.jit
def neuron_forward_kernel(
    x_ptr, v0_ptr, leak_ptr, spikes_ptr, v_last_ptr, v_seq_ptr,
    T, N, leak, params, v_threshold, v_reset, levels,
    LAW: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, FIRE_MODE: tl.constexpr, HALF_EVEN: tl.constexpr, STORE_V_SEQ: tl.constexpr,
    STORE_V_LAST: tl.constexpr, SHARED_V0: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if LAW == MULTIPLY_LEAK:
        leak = tl.load(leak_ptr).to(tl.float32)
    n = tl.cast(N, tl.int64)  # row stride in int64: T*N may pass 2**31
    row = n * 0
    v = tl.load(v0_ptr + _membrane_offsets(offs, SHARED_V0), mask=mask, other=0.0).to(tl.float32)
    for _ in range(T):
        at = row + offs
        row += n
        x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
        h = charge(v, x, leak, params, LAW, DECAY_INPUT)
        s = fire(h, v_threshold, levels, FIRE_MODE, HALF_EVEN)
        v = reset(h, s, v_threshold, v_reset, HARD_RESET)
        tl.store(spikes_ptr + at, s.to(spikes_ptr.dtype.element_ty), mask=mask)
        if STORE_V_SEQ:
            tl.store(v_seq_ptr + at, v.to(v_seq_ptr.dtype.element_ty), mask=mask)
    if STORE_V_LAST:
        tl.store(v_last_ptr + offs, v.to(v_last_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _advance(v, x, leak, params, v_threshold, v_reset, levels, LAW: tl.constexpr, DECAY_INPUT: tl.constexpr,
             HARD_RESET: tl.constexpr, FIRE_MODE: tl.constexpr, HALF_EVEN: tl.constexpr):
    """One forward step, as neuron_forward_kernel takes it: (H[t], V[t]) from V[t-1] and X[t]."""
    h = charge(v, x, leak, params, LAW, DECAY_INPUT)
    return h, reset(h, fire(h, v_threshold, levels, FIRE_MODE, HALF_EVEN), v_threshold, v_reset, HARD_RESET)


@triton.jit
def neuron_backward_kernel(
    grad_spikes_ptr, grad_v_seq_ptr, grad_v_last_ptr, x_ptr, v0_ptr, leak_ptr,
    grad_x_ptr, grad_v0_ptr, grad_leak_ptr,
    T, N, leak, params, v_threshold, v_reset, alpha, levels,
    LAW: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr, SURROGATE: tl.constexpr, FIRE_MODE: tl.constexpr,
    HALF_EVEN: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, NEED_LEAK_GRAD: tl.constexpr,
    NEED_V_PREV: tl.constexpr, SHARED_V0: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):
    # BPTT over chunks of CHUNK steps, last chunk first. A chunk's H values are recomputed from x into
    # registers (a tuple, the loop unrolled), then swept backwards, recomputing each spike from its H by
    # forward's fire(): nothing but x and v0 is saved and H never touches memory. The membrane a chunk
    # starts from is rebuilt from v0, so x is read once more per earlier step only when T > CHUNK.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if LAW == MULTIPLY_LEAK:
        leak = tl.load(leak_ptr).to(tl.float32)
    dh_dx = charge_grad_x(leak, params, LAW, DECAY_INPUT)
    n = tl.cast(N, tl.int64)  # row stride in int64: T*N may pass 2**31
    v0 = tl.load(v0_ptr + _membrane_offsets(offs, SHARED_V0), mask=mask, other=0.0).to(tl.float32)
    if HAS_GRAD_V_LAST:
        grad_v = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        grad_v = tl.zeros([BLOCK], dtype=tl.float32)
    leak_acc = tl.zeros([BLOCK], dtype=tl.float32)
    chunks = tl.cdiv(T, CHUNK)
    for c in range(chunks):
        t0 = (chunks - 1 - c) * CHUNK
        v = v0
        row = n * 0
        for _ in range(t0):
            x = tl.load(x_ptr + row + offs, mask=mask, other=0.0).to(tl.float32)
            _, v = _advance(v, x, leak, params, v_threshold, v_reset, levels, LAW, DECAY_INPUT, HARD_RESET,
                            FIRE_MODE, HALF_EVEN)
            row += n
        start = v
        hs = ()
        xs = ()  # for the leak gradient only: unused, the compiler drops it
        for k in tl.static_range(CHUNK):
            # Steps past T (in the last chunk) load nothing; their H is never used.
            x = tl.load(x_ptr + row + k * n + offs, mask=mask & (t0 + k < T), other=0.0).to(tl.float32)
            h, v = _advance(v, x, leak, params, v_threshold, v_reset, levels, LAW, DECAY_INPUT, HARD_RESET,
                            FIRE_MODE, HALF_EVEN)
            hs = hs + (h,)
            xs = xs + (x,)
        for k in tl.static_range(CHUNK - 1, -1, -1):
            if t0 + k < T:
                at = row + k * n + offs
                h = hs[k]
                s = fire(h, v_threshold, levels, FIRE_MODE, HALF_EVEN)
                gs = tl.load(grad_spikes_ptr + at, mask=mask, other=0.0).to(tl.float32)
                if HAS_GRAD_V_SEQ:
                    grad_v += tl.load(grad_v_seq_ptr + at, mask=mask, other=0.0).to(tl.float32)
                ds_dh = spike_grad(h, v_threshold, alpha, levels, SURROGATE, FIRE_MODE)
                grad_h = gs * ds_dh + grad_v * reset_grad(h, s, ds_dh, v_threshold, v_reset, HARD_RESET, DETACH_RESET,
                                                          FIRE_MODE)
                # V[t-1], rebuilt from H[t-1], for PLIF's leak gradient and for laws whose dH/dV depends on V.
                if NEED_V_PREV:
                    if k == 0:
                        v_prev = start
                    else:
                        s_prev = fire(hs[k - 1], v_threshold, levels, FIRE_MODE, HALF_EVEN)
                        v_prev = reset(hs[k - 1], s_prev, v_threshold, v_reset, HARD_RESET)
                    if NEED_LEAK_GRAD:
                        leak_acc += grad_h * charge_grad_leak(v_prev, xs[k], params[V_REST], DECAY_INPUT)
                else:
                    v_prev = h
                tl.store(grad_x_ptr + at, (grad_h * dh_dx).to(grad_x_ptr.dtype.element_ty), mask=mask)
                grad_v = grad_h * charge_grad_v(v_prev, leak, params, LAW)
    tl.store(grad_v0_ptr + offs, grad_v.to(grad_v0_ptr.dtype.element_ty), mask=mask)
    if NEED_LEAK_GRAD:
        tl.store(grad_leak_ptr + offs, leak_acc, mask=mask)


def _flags(cfg):
    """Compile-time switches shared by both kernels, from a NeuronConfig."""
    return dict(LAW=int(cfg.charge_law), DECAY_INPUT=bool(cfg.decay_input), HARD_RESET=bool(cfg.hard_reset),
                FIRE_MODE=int(cfg.fire_mode))


def _grid(N, block):
    return (triton.cdiv(N, block),)


def neuron_forward(x, v0, leak, cfg, store_v_seq, store_v_last=True):
    """(spikes, v_last, v_seq); a membrane not asked for is an empty tensor, and the kernel is compiled
    without its store (x stands in for the pointer)."""
    T, N = x.shape
    spikes = torch.empty_like(x)
    v_last = x.new_empty(N if store_v_last else 0)
    v_seq = torch.empty_like(x) if store_v_seq else x.new_empty(0)
    if N == 0:
        return spikes, v_last, v_seq
    neuron_forward_kernel[_grid(N, BLOCK)](
        x, v0, leak if leak is not None else x, spikes, v_last if store_v_last else x, v_seq if store_v_seq else x,
        T, N, cfg.leak, law_params(cfg), cfg.v_threshold, cfg.v_reset, float(cfg.levels),
        HALF_EVEN=bool(cfg.round_half_even), STORE_V_SEQ=store_v_seq, STORE_V_LAST=store_v_last,
        SHARED_V0=v0.numel() != N, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False,
        **_flags(cfg),
    )
    return spikes, v_last, v_seq


def neuron_backward(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, cfg, need_leak_grad):
    T, N = x.shape
    grad_x = torch.empty_like(x)
    grad_v0 = torch.empty(N, dtype=x.dtype, device=x.device)
    grad_leak = torch.empty(N if need_leak_grad else 0, dtype=torch.float32, device=x.device)
    if N == 0:
        return grad_x, grad_v0, grad_leak
    neuron_backward_kernel[_grid(N, BACKWARD_BLOCK)](
        grad_spikes, grad_v_seq if grad_v_seq is not None else x, grad_v_last if grad_v_last is not None else grad_v0,
        x, v0, leak if leak is not None else x, grad_x, grad_v0, grad_leak if need_leak_grad else x,
        T, N, cfg.leak, law_params(cfg), cfg.v_threshold, cfg.v_reset, cfg.alpha, float(cfg.levels),
        DETACH_RESET=bool(cfg.detach_reset), SURROGATE=int(cfg.surrogate), HALF_EVEN=bool(cfg.round_half_even),
        HAS_GRAD_V_SEQ=grad_v_seq is not None, HAS_GRAD_V_LAST=grad_v_last is not None, SHARED_V0=v0.numel() != N,
        NEED_LEAK_GRAD=need_leak_grad, NEED_V_PREV=need_leak_grad or cfg.law.varying_grad_v, BLOCK=BACKWARD_BLOCK, CHUNK=CHUNK, num_warps=NUM_WARPS, enable_fp_fusion=False, **_flags(cfg),
    )
    return grad_x, grad_v0, grad_leak


def aot_specs():
    """Ahead-of-time compile specs for benchmarks/static_gpu.py: forward and backward, float32 and
    bfloat16, LIF (1/tau a constant) and PLIF (learnable leak, leak gradient), as a training step
    launches them (v_last stored, as a stateful module asks, but no v_seq; autograd hands backward a zero
    grad_v_last; N divisible by 16). v_last is written once after the time loop, so the stateless variant
    moves the same bytes per neuron-step. The ternary
    (bipolar) and multi-bit (IE-LIF) fire modes are listed in float32 only: their loads and stores are the
    binary LIF's, only the fire/surrogate arithmetic differs, so one dtype shows their register cost."""
    specs = []
    variants = [(dtype, neuron, has_leak, 0) for dtype in ("fp32", "bf16")
                for neuron, has_leak in (("lif", False), ("plif", True))]
    variants += [("fp32", "bipolar_lif", False, 1), ("fp32", "ielif", False, 2)]
    for dtype, neuron, has_leak, fire_mode in variants:
        ptr = "*" + dtype
        flags = dict(LAW=(MULTIPLY_LEAK if has_leak else DIVIDE_BY_TAU).value, DECAY_INPUT=True, HARD_RESET=fire_mode == 0,
                     FIRE_MODE=fire_mode)
        forward = dict(HALF_EVEN=False, STORE_V_SEQ=False, STORE_V_LAST=True, SHARED_V0=True, BLOCK=BLOCK, **flags)
        backward = dict(DETACH_RESET=False, SURROGATE=0, HALF_EVEN=False, HAS_GRAD_V_SEQ=False, HAS_GRAD_V_LAST=True,
                        NEED_V_PREV=has_leak, SHARED_V0=True,
                        NEED_LEAK_GRAD=has_leak, BLOCK=BACKWARD_BLOCK, CHUNK=CHUNK, **flags)
        scalars = {"T": "i32", "N": "i32", "leak": "fp32", "params": ("fp32",) * len(LAW_PARAMS),
                   "v_threshold": "fp32", "v_reset": "fp32"}
        specs.append(dict(
            name=f"neuron_forward {neuron} {dtype}", kernel=neuron_forward_kernel, num_warps=NUM_WARPS,
            signature={"x_ptr": ptr, "v0_ptr": ptr, "leak_ptr": "*fp32", "spikes_ptr": ptr, "v_last_ptr": ptr,
                       "v_seq_ptr": ptr, **scalars, "levels": "fp32"},
            constexprs=forward, time_loops=(dict(steps=1),)))
        specs.append(dict(
            name=f"neuron_backward {neuron} {dtype}", kernel=neuron_backward_kernel, num_warps=NUM_WARPS,
            signature={"grad_spikes_ptr": ptr, "grad_v_seq_ptr": ptr, "grad_v_last_ptr": ptr, "x_ptr": ptr,
                       "v0_ptr": ptr, "leak_ptr": "*fp32", "grad_x_ptr": ptr,
                       "grad_v0_ptr": ptr, "grad_leak_ptr": "*fp32", **scalars, "alpha": "fp32",
                       "levels": "fp32"},
            constexprs=backward,
            # The chunk loop moves CHUNK steps an iteration; the loop nested in it rebuilds a chunk's starting
            # membrane from v0 and runs only for the chunks after the first.
            time_loops=(dict(steps=CHUNK), dict(steps=1, only_when=f"T > {CHUNK}"))))
    return specs
