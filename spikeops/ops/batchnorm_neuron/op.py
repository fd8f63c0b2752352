"""BatchNorm -> neuron as one autograd operator.

``nn.BatchNorm`` keeps its input for backward and the neuron keeps its own input (BatchNorm's output), so
the pair holds two full-size tensors per neuron-step. Here forward normalises with ATen's batch norm (the
kernel nn.BatchNorm runs, so the statistics, the running-statistics update and the normalised values are
bit for bit nn.BatchNorm's), runs the fused neuron kernel on the result and drops it. Backward keeps only
BatchNorm's input, the per-channel statistics and v0: it recomputes the normalised input (the same kernel
on the same input gives the same values) and, inside the neuron kernel, the membrane, then runs the
neuron's fused BPTT and ATen's batch-norm backward. The neuron part runs on any backend; "torch" is the
reference (nn.functional.batch_norm and the neuron reference under autograd).
"""
from __future__ import annotations

import math

import torch

from .._autograd import recording_backward, reference_backward, signature_once
from .._dispatch import forward_backward_ops
from ..neuron.config import NeuronConfig
from ..neuron.op import check_input, fused_backward, prepare_call
from ..spike_pack import mark_neuron_spikes
from . import naive

__all__ = ["batchnorm_neuron"]


def _normalise(x2, weight, bias, running_mean, running_var, training, momentum, eps):
    """ATen's batch norm on [T*B, C, *]: (normalised, mean, invstd); updates the running statistics."""
    if training:
        if running_mean is None:
            return torch.ops.aten._native_batch_norm_legit.no_stats(x2, weight, bias, True, momentum, eps)
        return torch.ops.aten._native_batch_norm_legit(x2, weight, bias, running_mean, running_var, True, momentum,
                                                       eps)
    return torch.ops.aten._native_batch_norm_legit_no_training(x2, weight, bias, running_mean, running_var,
                                                               momentum, eps)


@signature_once
class BatchNormNeuronFunction(torch.autograd.Function):
    """x [T, B, C, *] contiguous -> (spikes [T, N], v_last [N], v_seq) with N = B*C*prod(*)."""

    @staticmethod
    def forward(x, v0, weight, bias, leak, running_mean, running_var, training, momentum, eps, cfg: NeuronConfig,
                store_v_seq, backend):
        T = x.shape[0]
        y, mean, invstd = _normalise(x.flatten(0, 1), weight, bias, running_mean, running_var, training, momentum,
                                     eps)
        forward_op, _ = forward_backward_ops("neuron", backend)
        spikes, v_last, v_seq = forward_op(y.view(T, -1), v0, leak, cfg.as_list(), store_v_seq)
        return spikes, v_last, v_seq, mean, invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, v0, weight, bias, leak, running_mean, running_var, training, momentum, eps, cfg, store_v_seq, backend = inputs
        mean, invstd = output[3], output[4]
        # In eval the running statistics normalise; they are buffers the optimizer does not change.
        ctx.save_for_backward(x, v0, weight, bias, leak, mean, invstd,
                              None if training else running_mean, None if training else running_var)
        ctx.training, ctx.eps, ctx.cfg, ctx.store_v_seq, ctx.backend = training, eps, cfg, store_v_seq, backend
        ctx.mark_non_differentiable(mean, invstd)
        ctx.set_materialize_grads(False)  # unused outputs' gradients stay None (NeuronFunction.setup_context)
        if not store_v_seq:
            ctx.mark_non_differentiable(output[2])

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_mean, _grad_invstd):
        x, v0, weight, bias, leak, mean, invstd, running_mean, running_var = ctx.saved_tensors
        if recording_backward():
            def reference(x_, v0_, weight_, bias_, leak_):
                # Batch statistics again, without touching the running ones a second time.
                spikes, v_last, v_seq = naive.batchnorm_neuron(x_, v0_, weight_, bias_, running_mean, running_var,
                                                               ctx.training, 0.0, ctx.eps, ctx.cfg, leak_,
                                                               ctx.store_v_seq)
                return spikes, v_last, (v_seq if ctx.store_v_seq else x_.new_empty(0))
            grads = reference_backward(reference, (x, v0, weight, bias, leak), (grad_spikes, grad_v_last, grad_v_seq),
                                       ctx.needs_input_grad[:5])
            return (*grads, *([None] * 8))
        x2 = x.flatten(0, 1)
        y, _, _ = _normalise(x2, weight, bias, None if ctx.training else running_mean,
                             None if ctx.training else running_var, ctx.training, 0.0, ctx.eps)
        grad_y, grad_v0, grad_leak = fused_backward(ctx, y.view(x.shape[0], -1), v0, leak, grad_spikes, grad_v_last,
                                                    grad_v_seq, need_v0_grad=ctx.needs_input_grad[1],
                                                    need_leak_grad=leak is not None and ctx.needs_input_grad[4])
        del y
        need = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[2],
                bias is not None and ctx.needs_input_grad[3]]
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_y.view(x2.shape), x2, weight, running_mean, running_var, mean if ctx.training else None,
            invstd if ctx.training else None, ctx.training, ctx.eps, need)
        return (grad_x.view(x.shape) if need[0] else None, grad_v0, grad_weight if need[1] else None,
                grad_bias if need[2] else None, grad_leak, *([None] * 8))


def _check_batchnorm(x, weight, bias, running_mean, running_var, momentum, eps) -> int:
    """nn.BatchNorm's own argument checks, naming the argument; returns the channel count."""
    if x.dim() < 3:
        raise ValueError(f"x: expected a time-major [T, B, C, *] tensor, got shape {tuple(x.shape)}")
    channels = x.shape[2]
    for name, tensor in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                         ("running_var", running_var)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(tensor).__name__}")
        if tensor.shape != (channels,) or tensor.device != x.device:
            raise ValueError(f"{name}: expected shape ({channels},) (x's channel count) on {x.device}, got "
                             f"{tuple(tensor.shape)} on {tensor.device}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean, running_var: expected both or neither, got one of them")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                 or not 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum: expected a number in [0, 1] or None, got {momentum!r}")
    return channels


def batchnorm_neuron(x: torch.Tensor, v0=None, *, weight=None, bias=None, running_mean=None, running_var=None,
                     training: bool = True, momentum: float = 0.1, eps: float = 1e-5, cfg: NeuronConfig,
                     leak: torch.Tensor | None = None, backend: str = "auto", store_v_seq: bool = False,
                     num_batches_tracked: torch.Tensor | None = None):
    """``neuron(BatchNorm(x))`` for time-major ``x`` [T, B, C, *] with BatchNorm over the flattened T*B batch
    (SpikingJelly's SeqToANNContainer / multi-step BatchNorm, the backbones' ConvBN), keeping for backward
    only ``x``, the per-channel statistics and ``v0``.

    BatchNorm arguments as ``nn.functional.batch_norm`` (``momentum=None``: cumulative average, which needs
    ``num_batches_tracked``, updated in place as nn.BatchNorm does). Returns (spikes [T, B, C, *], v_last
    [B, C, *], v_seq or None), as ``neuron_multi_step``.
    """
    check_input(x)
    _check_batchnorm(x, weight, bias, running_mean, running_var, momentum, eps)
    if x.shape[0] == 0:
        raise ValueError(f"x: expected a time-major tensor [T, B, C, *] with T >= 1, got shape {tuple(x.shape)}")
    if training and running_mean is not None and num_batches_tracked is not None:
        num_batches_tracked.add_(1)  # as nn.BatchNorm: before the update, which may read it
        momentum = 1.0 / float(num_batches_tracked) if momentum is None else momentum
    elif momentum is None:
        momentum = 0.0
    neuron_shape = x.shape[1:]
    v0, leak, backend = prepare_call(x, v0, leak, cfg, backend)
    if backend == "torch" or x.numel() == 0:
        spikes, v_last, v_seq = naive.batchnorm_neuron(x, v0, weight, bias, running_mean, running_var, training,
                                                       momentum, eps, cfg, leak, store_v_seq)
    else:
        spikes, v_last, v_seq, _, _ = BatchNormNeuronFunction.apply(
            x.contiguous(), v0.reshape(-1).contiguous(), weight, bias, leak, running_mean, running_var, training,
            momentum, eps, cfg, store_v_seq, backend)
    return (mark_neuron_spikes(spikes.view(x.shape), cfg), v_last.view(neuron_shape),
            v_seq.view(x.shape) if store_v_seq else None)
