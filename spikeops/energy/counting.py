"""What one compute call costs: dense multiply-accumulates, and how many events (spikes) drive it.

A call is *spike-driven* when the operand that streams through it is spike-valued: every element an
integer of magnitude at most ``max_spike_level`` (binary spikes, ternary/bipolar spikes, IE-LIF integer
spikes and SEW-style residual sums of spikes). Each unit of such a value is one synaptic event, so a
2-spike costs two accumulates (docs/energy.md) and a -1 costs one. Any other operand (the encoding
layer's image, a time-averaged feature) makes the call a MAC call.

Layers with weights are driven by their activation; a product of two activations (attention) is driven
by whichever spike-valued operand has fewer events per multiply-accumulate, the schedule an event-driven
accelerator would pick.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["OpCount", "SpikeStats", "spike_stats", "count_matmul", "count_linear", "count_conv", "count_reduction"]

DEFAULT_MAX_SPIKE_LEVEL = 32


@dataclass(frozen=True)
class SpikeStats:
    """Events carried by a tensor: ``spikes`` = sum of |value| (the integer count for multi-bit spikes),
    ``slots`` = number of elements, ``spike_valued`` = every value is an integer within the level bound."""
    spikes: float
    slots: int
    spike_valued: bool

    @property
    def rate(self) -> float:
        return self.spikes / self.slots if self.slots else 0.0


def spike_stats(x: torch.Tensor, max_spike_level: int = DEFAULT_MAX_SPIKE_LEVEL) -> SpikeStats:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.numel() == 0:
        return SpikeStats(0.0, 0, True)
    magnitude = x.detach().abs().double()
    integer_valued = bool(torch.equal(magnitude, magnitude.round())) and float(magnitude.max()) <= max_spike_level
    return SpikeStats(float(magnitude.sum()), x.numel(), integer_valued)


@dataclass
class OpCount:
    """One compute call, as the profiler records it and as ``energy_ops`` hooks report it.

    macs: dense multiply-accumulates of the call over everything it processed (batch and time steps).
    spikes, slots: events and elements of the driving operand (see ``SpikeStats``).
    spike_driven: True when the driving operand is spike-valued (accumulates, AC), False for MACs.
    input_shape: shape of the driving operand; its leading dims tell the profiler how many time steps
        the call covers ([T*B, ...] or [T, B, ...]: T steps; anything else: one step).
    weight_params: weights the call reads (0 for a product of two activations).
    label: distinguishes several ops reported by one module ("qk", "av", ...).
    real_input: the driving operand of a MAC call, kept until the profiler knows T so that it can tell
        whether the input repeats over time (the encoding layer under direct encoding), in which case the
        call is computed once rather than T times.
    """
    kind: str
    macs: float
    spikes: float
    slots: int
    spike_driven: bool
    input_shape: tuple
    weight_params: int = 0
    label: str = ""
    real_input: torch.Tensor | None = field(default=None, repr=False)


def _count(kind: str, macs: float, driver: torch.Tensor, stats: SpikeStats, weight_params: int, label: str) -> OpCount:
    return OpCount(kind=kind, macs=float(macs), spikes=stats.spikes, slots=stats.slots,
                   spike_driven=stats.spike_valued, input_shape=tuple(driver.shape), weight_params=weight_params,
                   label=label, real_input=None if stats.spike_valued else driver.detach())


def _params(*tensors) -> int:
    return sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))


def count_conv(x: torch.Tensor, weight: torch.Tensor, bias, output: torch.Tensor, *, label: str = "",
               max_spike_level: int = DEFAULT_MAX_SPIKE_LEVEL) -> OpCount:
    """Convolution: every output element takes (C_in / groups) * prod(kernel) multiply-accumulates."""
    macs = output.numel() * weight[0].numel()
    return _count(f"conv{weight.dim() - 2}d", macs, x, spike_stats(x, max_spike_level), _params(weight, bias), label)


def count_linear(x: torch.Tensor, weight: torch.Tensor, bias, output: torch.Tensor, *, label: str = "",
                 max_spike_level: int = DEFAULT_MAX_SPIKE_LEVEL) -> OpCount:
    macs = output.numel() * weight.shape[-1]
    return _count("linear", macs, x, spike_stats(x, max_spike_level), _params(weight, bias), label)


def count_matmul(a: torch.Tensor, b: torch.Tensor, output: torch.Tensor | None = None, *, label: str = "",
                 max_spike_level: int = DEFAULT_MAX_SPIKE_LEVEL) -> OpCount:
    """``a @ b`` with torch.matmul broadcasting. An operand that is an ``nn.Parameter`` is a weight; the
    driving operand is then the other one. Attention ``energy_ops`` hooks call this on their operands."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise ValueError(f"{name}: expected a tensor with at least one dimension, got "
                             f"{type(t).__name__ if not isinstance(t, torch.Tensor) else tuple(t.shape)}")
    if output is None:
        output_numel = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) * \
            (a.shape[-2] if a.dim() > 1 else 1) * (b.shape[-1] if b.dim() > 1 else 1)
    else:
        output_numel = output.numel()
    macs = output_numel * a.shape[-1]
    a_is_weight, b_is_weight = isinstance(a, nn.Parameter), isinstance(b, nn.Parameter)
    if a_is_weight != b_is_weight:
        driver = b if a_is_weight else a
        return _count("linear", macs, driver, spike_stats(driver, max_spike_level), _params(a if a_is_weight else b),
                      label)
    candidates = [(t, spike_stats(t, max_spike_level)) for t in (a, b)]
    spiking = [(t, s) for t, s in candidates if s.spike_valued]
    # Events per multiply-accumulate of an operand = its firing rate; stream the sparser one.
    driver, stats = min(spiking, key=lambda ts: ts[1].rate) if spiking else candidates[0]
    return _count("matmul", macs, driver, stats, 0, label)


def count_reduction(x: torch.Tensor, *, label: str = "", max_spike_level: int = DEFAULT_MAX_SPIKE_LEVEL) -> OpCount:
    """A sum of ``x`` over some axis (QKFormer's token/channel sums, SDSA's column sum): one accumulate per
    element, driven by ``x`` itself."""
    return _count("reduce", x.numel(), x, spike_stats(x, max_spike_level), 0, label)
