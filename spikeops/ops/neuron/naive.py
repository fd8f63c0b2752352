"""Pure-PyTorch reference of the multi-step neuron: the oracle every fused backend is tested against.

Written for readability, one time step per loop iteration, with autograd doing BPTT. Works in any
floating dtype (float64 for gradcheck). Half-precision inputs run the membrane in float32, as the
kernels do.
"""
from __future__ import annotations

import torch

from ...surrogate import SURROGATES, _HeavisideWithSurrogate
from .config import FIRE_BIPOLAR, FIRE_INTEGER, NeuronConfig


def charge(v: torch.Tensor, x: torch.Tensor, cfg: NeuronConfig, leak) -> torch.Tensor:
    return cfg.law.reference(v, x, cfg, leak)


class _StraightThroughLevels(torch.autograd.Function):
    """S = clamp(round(H/theta), 0, D); dS/dH = 1/theta inside [0, D*theta], else 0."""

    @staticmethod
    def forward(ctx, h, theta, levels, half_even):
        ctx.save_for_backward(h)
        ctx.theta, ctx.levels = theta, levels
        y = h / theta
        level = torch.round(y) if half_even else torch.floor(y + 0.5)
        # NaN never spikes, as in the other modes; + 0.0 turns the -0 that rounds small negatives into +0.
        return level.clamp(0, levels).nan_to_num(0.0) + 0.0

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        inside = (h >= 0) & (h <= ctx.theta * ctx.levels)
        return grad * inside.to(grad.dtype) / ctx.theta, None, None, None


class _Bipolar(torch.autograd.Function):
    """S = +1[H >= theta] - 1[H <= -theta]; dS/dH = surrogate(|H| - theta)."""

    @staticmethod
    def forward(ctx, h, theta, surrogate_id, alpha):
        ctx.save_for_backward(h)
        ctx.theta, ctx.surrogate_id, ctx.alpha = theta, surrogate_id, alpha
        return (h - theta >= 0).to(h.dtype) - (-h - theta >= 0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.surrogate_id].grad(h.abs() - ctx.theta, ctx.alpha), None, None, None


def fire(h: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    if cfg.fire_mode == FIRE_INTEGER:
        return _StraightThroughLevels.apply(h, cfg.v_threshold, cfg.levels, cfg.round_half_even)
    if cfg.fire_mode == FIRE_BIPOLAR:
        return _Bipolar.apply(h, cfg.v_threshold, cfg.surrogate, cfg.alpha)
    return _HeavisideWithSurrogate.apply(h - cfg.v_threshold, cfg.surrogate, cfg.alpha)


def reset(h: torch.Tensor, s: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    if cfg.detach_reset:
        s = s.detach()
    if not cfg.hard_reset:
        return h - s * cfg.v_threshold
    # |S| of a bipolar spike rises with |H|, so its surrogate slope carries H's sign, also where S = 0
    # (s.abs() would drop the gradient there; the fused kernels and SpikingJelly's ternary neuron keep it).
    fired = torch.where(h < 0, -s, s) if cfg.fire_mode == FIRE_BIPOLAR else s
    return cfg.v_reset * fired + (1.0 - fired) * h


def multi_step(x_seq: torch.Tensor, v0: torch.Tensor, cfg: NeuronConfig, leak=None, store_v_seq: bool = False):
    """x_seq [T, *], v0 [*] -> (spikes [T, *] in x's dtype, v_last [*], v_seq [T, *] or None)."""
    state_dtype = torch.float32 if x_seq.dtype in (torch.float16, torch.bfloat16) else x_seq.dtype
    v = v0.to(state_dtype)
    leak = None if leak is None else leak.to(state_dtype).reshape(())
    spikes, voltages = [], []
    for x in x_seq:
        h = charge(v, x.to(state_dtype), cfg, leak)
        s = fire(h, cfg)
        v = reset(h, s, cfg)
        spikes.append(s.to(x_seq.dtype))
        if store_v_seq:
            voltages.append(v.to(x_seq.dtype))
    if not spikes:
        empty = x_seq.new_empty(x_seq.shape)
        return empty, v.to(x_seq.dtype), (empty.clone() if store_v_seq else None)
    return torch.stack(spikes), v.to(x_seq.dtype), (torch.stack(voltages) if store_v_seq else None)
