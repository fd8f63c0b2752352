"""Bipolar self-attention block (BSA, SPEC §3) with the Q/K/V projections of the Spikformer/QKFormer
attention blocks (Conv1x1 + BatchNorm on [T*B, C, N], then a neuron), the attention on the fused
``spikeops.ops.bipolar_attention`` operator.

Q and K pass through bipolar (ternary) LIF neurons, V through a binary LIF; the attention LIF
(threshold 0.5 as in the other spiking attentions) is fused into the operator and starts from rest
at every call. Like SpikingJelly's, the projection neurons keep their membranes across calls until
``reset()``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .multibit import BipolarLIF
from .neurons import LIF, BaseNeuron
from .ops.bipolar_attention.op import NORM_CODES, bipolar_attention

__all__ = ["BipolarSelfAttention"]


def check_heads(dim: int, num_heads: int) -> None:
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or dim % num_heads != 0:
        raise ValueError(f"num_heads: must divide dim={dim!r}, got num_heads={num_heads}")


def check_finite(name: str, value) -> None:
    """Hyper-parameters used only inside forward are checked at construction, before any neuron runs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")


def check_block_input(x, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[2] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a [T, B, C={dim}, H, W] tensor, got {shape}")


class SpikingBlock(nn.Module):
    """Shared plumbing: ``reset()`` for every neuron, and SN(BN(Conv(x))) on [T*B, ...] as the official code runs it."""

    def reset(self):
        for module in self.modules():
            if isinstance(module, BaseNeuron):
                module.reset()

    def conv_bn_neuron(self, name: str, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x.flatten(0, 1)))
        return getattr(self, f"{name}_lif")(y.reshape(T, B, *y.shape[1:]))


def lif(backend: str, v_threshold: float = 1.0) -> LIF:
    return LIF(tau=2.0, v_threshold=v_threshold, detach_reset=True, step_mode="m", backend=backend)


class BipolarSelfAttention(SpikingBlock):
    """x [T, B, C, H, W] -> spikes [T, B, C, H, W]:
    Q, K = BipolarLIF(BN(Conv1x1(x))), V = LIF(BN(Conv1x1(x))),
    out = LIF(BN(Conv1x1(SN_0.5(Shiftmax(scale * Q K^T) V)))) per head.

    norm: "shiftmax" (default), "softmax" (the ablation) or "none"; scale 1.0 keeps the scores
    integers, so Shiftmax's numerator is an exact shift. ``qk_threshold`` is the bipolar neurons' θ.
    """

    def __init__(self, dim: int, num_heads: int = 8, scale: float = 1.0, norm: str = "shiftmax",
                 pow2_denominator: bool = True, qk_threshold: float = 1.0, attention_threshold: float = 0.5,
                 backend: str = "auto"):
        super().__init__()
        check_heads(dim, num_heads)
        check_finite("scale", scale)
        check_finite("attention_threshold", attention_threshold)
        if norm not in NORM_CODES:
            raise ValueError(f"norm: expected one of {tuple(NORM_CODES)}, got {norm!r}")
        self.dim, self.num_heads, self.scale, self.norm = dim, num_heads, scale, norm
        self.pow2_denominator, self.attention_threshold, self.backend = pow2_denominator, attention_threshold, backend
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
        self.q_lif = BipolarLIF(tau=2.0, v_threshold=qk_threshold, detach_reset=True, step_mode="m", backend=backend)
        self.k_lif = BipolarLIF(tau=2.0, v_threshold=qk_threshold, detach_reset=True, step_mode="m", backend=backend)
        self.v_lif = lif(backend)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.dim)
        T, B, C, H, W = x.shape
        h, d = self.num_heads, C // self.num_heads
        x = x.flatten(3)
        # [T, B, C, N] -> [T, B, h, N, d]: head g owns channels [g*d, (g+1)*d).
        q, k, v = (self.conv_bn_neuron(name, x).reshape(T, B, h, d, H * W).transpose(-1, -2)
                   for name in ("q", "k", "v"))
        y = bipolar_attention(q, k, v, self.scale, self.norm, pow2_denominator=self.pow2_denominator,
                              v_threshold=self.attention_threshold, check_ternary=False, backend=self.backend)
        y = y.transpose(-1, -2).reshape(T, B, C, H * W)
        return self.conv_bn_neuron("proj", y).reshape(T, B, C, H, W)

    def extra_repr(self):
        return (f"dim={self.dim}, num_heads={self.num_heads}, scale={self.scale}, norm={self.norm}, "
                f"pow2_denominator={self.pow2_denominator}, backend={self.backend}")
