"""The fused bipolar self-attention operator: torch.library registrations, the autograd Function and
the public entry points ``shiftmax_attention`` (Y = norm(scale Q K^T) V) and ``bipolar_attention``
(the same followed by the attention LIF, run by the shared fused neuron).

Forward saves q, k, v, y and two floats per query row (log2 normaliser, row sum); backward
recomputes the scores block by block, so no [N, N] tensor is ever stored.
"""
from __future__ import annotations

import math

import torch

from ... import backends
from .._autograd import loop_vmap, recording_backward, reference_backward, unwrapped
from .._dispatch import forward_backward_ops, register_fakes
from ...surrogate import resolve_surrogate
from ..neuron.config import make_config
from ..neuron.op import check_input, neuron_multi_step
from ..attention.layout import check_dense
from ..promises import promises_checked
from . import naive

NORM_CODES = {"none": 0, "shiftmax": 1, "softmax": 2}
MAX_HEAD_DIM = 256  # csrc/bipolar_attention/bipolar_attention_math.h (kMaxHeadDim) keeps one row of accumulators per thread


# ---------------------------------------------------------------- torch.library registrations
def _fake_forward(q, k, v, scale, norm, pow2_denominator):
    rows = q.shape[:2]
    stats = torch.float64 if q.dtype == torch.float64 else torch.float32  # the C++ kernels' accumulator dtype
    return torch.empty_like(v), q.new_empty(rows, dtype=stats), q.new_empty(rows, dtype=stats)


def _fake_backward(dy, q, k, v, y, lse, rowsum, scale, norm):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _check_kernel_call(q, k, v, norm, **saved) -> None:
    """What csrc/bipolar_attention/bipolar_attention_host.h checks, for the Triton ops: every index the kernels
    form lies inside their tensors."""
    if q.dim() != 3 or not q.is_contiguous():
        raise ValueError(f"bipolar_attention: q: expected a contiguous [H, N, d] tensor, got shape {tuple(q.shape)} "
                         f"strides {q.stride()}")
    if k.shape != q.shape or not k.is_contiguous():
        raise ValueError(f"bipolar_attention: k: expected a contiguous tensor of q's shape {tuple(q.shape)}, got "
                         f"{tuple(k.shape)}")
    if v.dim() != 3 or v.shape[:2] != q.shape[:2] or not v.is_contiguous():
        raise ValueError(f"bipolar_attention: v: expected a contiguous [H, N, dv] tensor matching q "
                         f"{tuple(q.shape)}, got {tuple(v.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"bipolar_attention: {name}: expected q's dtype {q.dtype} on {q.device}, got {t.dtype} "
                             f"on {t.device}")
    if q.shape[2] > MAX_HEAD_DIM or v.shape[2] > MAX_HEAD_DIM:
        raise ValueError(f"bipolar_attention: q, v: head dimensions must be <= {MAX_HEAD_DIM}, got d={q.shape[2]} "
                         f"dv={v.shape[2]}")
    if norm not in NORM_CODES.values():
        raise ValueError(f"bipolar_attention: norm: expected a code in {sorted(NORM_CODES.values())}, got {norm}")
    for name in ("dy", "y"):
        if name in saved:
            t = saved[name]
            if t.shape != v.shape or t.dtype != v.dtype or t.device != v.device or not t.is_contiguous():
                raise ValueError(f"bipolar_attention: {name}: expected a contiguous tensor shaped and typed like v "
                                 f"{tuple(v.shape)} {v.dtype} on {v.device}, got {tuple(t.shape)} {t.dtype} on {t.device}")
    for name in ("lse", "rowsum"):
        if name in saved:
            t = saved[name]
            if tuple(t.shape) != tuple(q.shape[:2]) or t.dtype != torch.float32 or t.device != q.device \
                    or not t.is_contiguous():
                raise ValueError(f"bipolar_attention: {name}: expected a contiguous float32 [H, N] = "
                                 f"{tuple(q.shape[:2])} tensor on {q.device}, got {tuple(t.shape)} {t.dtype} on {t.device}")


def _norm_name(code: int) -> str:
    return next(name for name, value in NORM_CODES.items() if value == code)


@torch.library.custom_op("spikeops::bipolar_attention_forward_triton", mutates_args=())
def _forward_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, norm: int,
                    pow2_denominator: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_kernel_call(q, k, v, norm)
    from ...kernels import bipolar_attention as kernels
    return kernels.attention_forward(q, k, v, scale, _norm_name(norm), pow2_denominator)


@torch.library.custom_op("spikeops::bipolar_attention_backward_triton", mutates_args=())
def _backward_triton(dy: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, y: torch.Tensor,
                     lse: torch.Tensor, rowsum: torch.Tensor, scale: float,
                     norm: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_kernel_call(q, k, v, norm, dy=dy, y=y, lse=lse, rowsum=rowsum)
    from ...kernels import bipolar_attention as kernels
    return kernels.attention_backward(dy, q, k, v, y, lse, rowsum, scale, _norm_name(norm))


register_fakes("bipolar_attention", _fake_forward, _fake_backward)


def _ops(backend: str):
    return forward_backward_ops("bipolar_attention", backend)


# ---------------------------------------------------------------- autograd
class ShiftmaxAttentionFunction(torch.autograd.Function):
    """q, k [H, N, d] ternary, v [H, N, dv], all contiguous; returns Y [H, N, dv] (and the row statistics,
    not differentiable). A backward that autograd records (double backward) differentiates the reference;
    vmap (torch.func) runs the op once per batch entry."""

    @staticmethod
    def forward(q, k, v, scale: float, norm: int, pow2_denominator: bool, backend: str):
        forward_op, _ = _ops(backend)
        return forward_op(q, k, v, scale, norm, pow2_denominator)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale, norm, pow2_denominator, backend = inputs
        y, lse, rowsum = output
        ctx.save_for_backward(q, k, v, y, lse, rowsum)
        ctx.scale, ctx.norm, ctx.pow2_denominator, ctx.backend = scale, norm, pow2_denominator, backend
        ctx.mark_non_differentiable(lse, rowsum)

    @staticmethod
    def vmap(info, in_dims, *args):
        return loop_vmap(ShiftmaxAttentionFunction, info, in_dims, *args)

    @staticmethod
    def backward(ctx, dy, _dlse, _drowsum):
        q, k, v, y, lse, rowsum = ctx.saved_tensors
        if recording_backward(dy, q):  # double backward or torch.func: the reference (spikeops/ops/_autograd.py)
            grads = reference_backward(
                lambda q_, k_, v_: naive.attention(q_, k_, v_, ctx.scale, _norm_name(ctx.norm), ctx.pow2_denominator),
                (q, k, v), (dy,), ctx.needs_input_grad[:3])
            return (*grads, None, None, None, None)
        _, backward_op = _ops(ctx.backend)
        dq, dk, dv = backward_op(dy.contiguous(), q, k, v, y, lse, rowsum, ctx.scale, ctx.norm)
        return dq, dk, dv, None, None, None, None


# ---------------------------------------------------------------- public entry points
def _check_attention_inputs(q, k, v, scale, norm, min_dim: int = 2):
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_dense(t, name)
        check_input(t, name)
    if q.dim() < min_dim:
        raise ValueError(f"q: expected at least {min_dim} dimensions ([..., N, d]), got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != q.dim() or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v: expected shape {tuple(q.shape[:-1])} + (dv,), got {tuple(v.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"{name}: expected q's dtype {q.dtype} on {q.device}, got {t.dtype} on {t.device}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    if norm not in NORM_CODES:
        raise ValueError(f"norm: expected one of {tuple(NORM_CODES)}, got {norm!r}")
    for name, size in (("q", q.shape[-1]), ("v", v.shape[-1])):
        if size > MAX_HEAD_DIM:
            raise ValueError(f"{name}: head dimension must be <= {MAX_HEAD_DIM}, got {size}")


def _check_ternary(q, k):
    for name, t in (("q", unwrapped(q)), ("k", unwrapped(k))):
        if bool(((t != 0) & (t.abs() != 1)).any()):
            raise ValueError(f"{name}: expected ternary spikes with values in {{-1, 0, +1}} (a bipolar neuron's "
                             f"output), got other values such as {t[(t != 0) & (t.abs() != 1)].flatten()[0].item()}")


def shiftmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, norm: str = "shiftmax", *,
                       pow2_denominator: bool = True, check_ternary: bool = True,
                       backend: str = "auto") -> torch.Tensor:
    """Y = norm(scale * Q K^T) V over the last two dimensions ([..., N, d] and [..., N, dv]).

    q, k: ternary spikes {-1, 0, +1}; the fused backends compute their product in integer arithmetic.
    norm: "shiftmax" (power-of-two numerator and, with ``pow2_denominator``, denominator), "softmax"
    or "none". See spikeops/ops/bipolar_attention/naive.py for the exact reading and its gradient.
    check_ternary: verify q and k are ternary (one reduction and a device sync); pass False when they
    come straight from a bipolar neuron. False is a promise: broken, the backends differ (Triton truncates the
    scores' operands to int8, the C++ kernels use the real values); debug mode (spikeops/ops/promises.py) checks
    it anyway.
    """
    _check_attention_inputs(q, k, v, scale, norm)
    backend = backends.resolve(backend, q.device)
    if backend == "triton" and q.dtype == torch.float64:
        raise TypeError("q: the 'triton' backend supports float32, float16 and bfloat16; use backend='cpu' or "
                        "'torch' for float64")
    if check_ternary or promises_checked():  # check_ternary=False is a promise, verified in debug mode
        _check_ternary(q, k)
    if q.shape[-2] == 0:  # no tokens: no score row to normalise, and the [..., 0, dv] result is empty
        return v.clone()
    # d = 0 (uniform scores) or dv = 0 (an empty result): the reference computes it, no kernel needed.
    if backend == "torch" or q.numel() == 0 or v.numel() == 0:
        return naive.attention(q, k, v, scale, norm, pow2_denominator)
    N, d, dv = q.shape[-2], q.shape[-1], v.shape[-1]
    y, _, _ = ShiftmaxAttentionFunction.apply(q.reshape(-1, N, d).contiguous(), k.reshape(-1, N, d).contiguous(),
                                        v.reshape(-1, N, dv).contiguous(), float(scale), NORM_CODES[norm],
                                        bool(pow2_denominator), backend)
    return y.view(v.shape)


def bipolar_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, norm: str = "shiftmax", *,
                      pow2_denominator: bool = True, tau: float = 2.0, v_threshold: float = 0.5,
                      v_reset: float | None = 0.0, detach_reset: bool = True, surrogate_function=None,
                      check_ternary: bool = True, backend: str = "auto") -> torch.Tensor:
    """Bipolar self-attention SN(norm(scale * Q K^T) V) on time-major q, k [T, ..., N, d], v [T, ..., N, dv].

    The attention LIF (tau, v_threshold, v_reset, detach_reset, surrogate) runs over T on the same
    backend; it starts from rest. Returns binary spikes shaped like v.
    """
    _check_attention_inputs(q, k, v, scale, norm, min_dim=3)
    if q.shape[0] == 0:
        raise ValueError(f"q: expected a time-major tensor [T, ..., N, d] with T >= 1, got shape {tuple(q.shape)}")
    # The neuron's arguments are checked here too: a bad one must fail before the attention kernels run.
    surrogate = resolve_surrogate(surrogate_function)
    cfg = make_config(tau=tau, decay_input=True, v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                      surrogate=surrogate.id, alpha=surrogate.alpha)
    y = shiftmax_attention(q, k, v, scale, norm, pow2_denominator=pow2_denominator, check_ternary=check_ternary,
                           backend=backend)
    spikes, _, _ = neuron_multi_step(y, cfg=cfg, backend=backend, store_v_last=False)
    return spikes


__all__ = ["shiftmax_attention", "bipolar_attention", "ShiftmaxAttentionFunction"]
