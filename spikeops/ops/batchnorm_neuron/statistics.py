"""Training batch-norm statistics, ATen's to the bit, for the fused BatchNorm -> neuron operator's forward.

``batch_statistics(x, running_mean, running_var, momentum, eps)`` returns ``(mean, invstd)`` and moves the
running statistics, exactly as ``aten._native_batch_norm_legit(x, weight, bias, running_mean, running_var,
True, momentum, eps)`` does (its last two outputs and its in-place update), or ``None``, touching nothing,
where it does not apply: then the caller runs ATen's batch norm.

It applies on contiguous CPU float32 ``[N, C, *]`` input with more than one element per sample and
channel, outside ``torch.compile`` tracing, with the C++ kernel ``spikeops::batch_norm_statistics``
(csrc/batchnorm_stats/). ATen sums each channel in one dependent chain of double additions, element after
element; the kernel runs eight channels' chains side by side, each in ATen's order, so it gives the same sums
several times faster. (float64 stays with ATen: there the squared term and its addition are one double
expression, which ATen's vectorised builds may or may not fuse into one multiply-add.) Whether this ATen build computes exactly that is checked, not assumed: a probe compares
the two once (means, inverse deviations and updated running statistics, on shapes with rounding in
every sum) and the kernel is used only where they agree.
"""
from __future__ import annotations

import functools

import torch

from .._dispatch import optional_op

__all__ = ["batch_statistics", "kernel_applies"]



def _applies(x: torch.Tensor, running_mean, running_var) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() < 3 or x.numel() == 0:
        return False
    # Row-major with more than one element per sample and channel is what ATen's kernel sums this way (it takes
    # [N, C, 1...] input for channels-last and sums it otherwise).
    if not x.is_contiguous() or x.numel() // (x.shape[0] * x.shape[1]) < 2:
        return False
    return all(s is None or (s.dtype == x.dtype and s.is_contiguous()) for s in (running_mean, running_var))


@functools.lru_cache(maxsize=None)
def _kernel_reproduces_aten() -> bool:
    """Whether ``spikeops::batch_norm_statistics`` gives ATen's statistics and running statistics bit for bit
    on this build: values spread over magnitudes so that every sum rounds, channel counts below,
    at and past the kernel's eight lanes, momenta that do not round to themselves."""
    op = optional_op("batch_norm_statistics")
    if op is None:
        return False
    generator = torch.Generator().manual_seed(0)
    for shape, momentum in (((3, 5, 37), 0.1), ((2, 19, 8, 8), 1 / 3), ((4, 8, 3, 5), 0.0), ((1, 11, 2, 2, 3), 1.0)):
        x = (torch.randn(shape, generator=generator) * torch.exp(4 * torch.randn(shape, generator=generator)) + 0.5)
        stats = [torch.rand(shape[1], generator=generator) + 0.5 for _ in range(2)]
        ours = [s.clone() for s in stats]
        _, mean, invstd = torch.ops.aten._native_batch_norm_legit(x, None, None, stats[0], stats[1], True, momentum,
                                                                  1e-5)
        got_mean, got_invstd = op(x, ours[0], ours[1], momentum, 1e-5)
        if not all(torch.equal(a, b) for a, b in zip((mean, invstd, *stats), (got_mean, got_invstd, *ours))):
            return False
    return True


def kernel_applies(x: torch.Tensor, running_mean, running_var) -> bool:
    """Whether ``batch_statistics`` computes the statistics of ``x`` (else it returns None)."""
    return not torch.compiler.is_compiling() and _applies(x, running_mean, running_var) and _kernel_reproduces_aten()


def batch_statistics(x: torch.Tensor, running_mean, running_var, momentum: float, eps: float):
    """``(mean, invstd)`` of ``x`` [N, C, *] over all dims but C, the running statistics (tensors or None) moved
    by ``momentum``, as ATen's training batch norm computes them; ``None`` (nothing touched) where the kernel
    does not apply or does not reproduce ATen on this build (``kernel_applies``)."""
    if not kernel_applies(x, running_mean, running_var):
        return None
    return torch.ops.spikeops.batch_norm_statistics(x, running_mean, running_var, momentum, eps)


def _register_fake() -> None:
    """Fake kernel of the C++ op (torch.compile, opcheck): its checks on shapes, per-channel outputs."""
    if optional_op("batch_norm_statistics") is None:
        return

    @torch.library.register_fake("spikeops::batch_norm_statistics")
    def _fake(x, running_mean, running_var, momentum, eps):
        torch._check(x.dim() >= 3, lambda: f"input must be [N, C, *], got shape {tuple(x.shape)}")
        channels = x.shape[1]
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None:
                torch._check(stat.shape == (channels,),
                             lambda: f"{name} must be [{channels}] (input's channel count), got {tuple(stat.shape)}")
        return x.new_empty(channels), x.new_empty(channels)


_register_fake()
