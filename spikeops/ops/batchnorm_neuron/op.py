"""BatchNorm -> neuron as one autograd operator.

``nn.BatchNorm`` keeps its input for backward and the neuron keeps its own input (BatchNorm's output), so
the pair holds two full-size tensors per neuron-step. Here forward normalises as ATen's batch norm does (the
kernel nn.BatchNorm runs, so the statistics, the running-statistics update and the normalised values are
bit for bit nn.BatchNorm's: on the CPU in float32 training the statistics come from ``statistics.py``'s
kernel, ATen's sums several channels at a time, and the values from them in one pass, each where a probe
shows it exact; elsewhere ATen's kernel itself), runs the fused neuron kernel on the result and drops it.
Backward keeps only
BatchNorm's input, the per-channel statistics and v0: it recomputes the normalised input (on the CPU in
training one pass x * alpha + beta from the saved statistics, the arithmetic of ATen's kernel, where a probe
shows it bit-exact; else the same kernel on the same input, which gives the same values) and, inside the
neuron kernel, the membrane, then runs the neuron's fused BPTT and ATen's batch-norm backward. The neuron part
runs on any backend; "torch" is the reference (nn.functional.batch_norm and the neuron reference under
autograd).

``pool=`` puts a max-pool between BatchNorm and neuron (QKFormer's SPEDS: conv -> BN -> max-pool -> LIF).
Unfused, that chain holds BatchNorm's input, the pool's input (BatchNorm's output) and the neuron's input
(the pooled tensor): three float tensors. Fused, backward keeps BatchNorm's input alone and recomputes the
normalisation and the pool; the pool's backward recomputes its argmax as
``SpikeMaxPool2d(recompute_indices=True)`` does (``spikeops.ops.max_pool``: ``aten.max_pool2d_with_indices``'s
argmax and ``aten.max_pool2d_with_indices_backward``'s gradient, bit for bit, in one call): the same values
and the same gradient routing as the unfused chain, ties included.
"""
from __future__ import annotations

import functools
import math

import torch

from .._autograd import recording_backward, reference_backward, signature_once
from .._dispatch import forward_backward_ops, optional_op
from ..neuron.config import NeuronConfig, config_from_surrogate
from ..neuron.op import check_flag, check_input, fake_backward, fake_forward, fused_backward, prepare_call
from ..spike_pack import mark_neuron_spikes
from ..max_pool import max_pool2d_recompute_backward, max_pool2d_values
from ..spike_pack.pool import max_pool_args
from . import naive
from .statistics import batch_statistics, kernel_applies

__all__ = ["batchnorm_neuron", "pooled_shape"]

_POOL_KEYS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _normalise(x2, weight, bias, running_mean, running_var, training, momentum, eps):
    """ATen's batch norm on [T*B, C, *]: (normalised, mean, invstd); updates the running statistics. In training
    on the CPU, where both are shown exact on this build, the statistics come from ``batch_statistics`` (ATen's
    sums, several channels at once) and the normalised values from them in one pass (``_apply_affine``)."""
    if training and _one_pass_exact(x2):
        statistics = batch_statistics(x2, running_mean, running_var, momentum, eps)
        if statistics is not None:
            return _apply_affine(x2, weight, bias, *statistics), *statistics
    if training:
        if running_mean is None:
            return torch.ops.aten._native_batch_norm_legit.no_stats(x2, weight, bias, True, momentum, eps)
        return torch.ops.aten._native_batch_norm_legit(x2, weight, bias, running_mean, running_var, True, momentum,
                                                       eps)
    return torch.ops.aten._native_batch_norm_legit_no_training(x2, weight, bias, running_mean, running_var,
                                                               momentum, eps)


def _affine(x2, weight, bias, mean, invstd):
    """(alpha, beta) per channel, shaped to broadcast over ``x2``, such that BatchNorm's output is
    ``x2 * alpha + beta``: the two per-channel terms ATen's CPU batch norm applies, computed as it computes
    them (alpha = invstd * weight, beta = bias - mean * alpha with one rounding, as its compiled code fuses)."""
    alpha = invstd if weight is None else invstd * weight
    beta = torch.addcmul(torch.zeros_like(mean) if bias is None else bias, mean.neg(), alpha)
    shape = (1, -1) + (1,) * (x2.dim() - 2)
    return alpha.view(shape), beta.view(shape)


@functools.lru_cache(maxsize=None)
def _saved_statistics_reproduce(dtype: torch.dtype) -> bool:
    """Whether, on this machine's CPU kernels, ``addcmul(beta, x, alpha)`` from the saved batch statistics gives
    ATen's training batch-norm output bit for bit (ATen's CPU kernel applies x * alpha + beta; whether that is
    one rounding or two depends on how ATen was compiled, and addcmul is compiled alike). Probed once per dtype
    on shapes that exercise the vector body and the tail, with and without weight and bias; where it does not
    hold, backward recomputes with ATen's batch norm as forward ran it."""
    generator = torch.Generator().manual_seed(0)
    for shape in ((3, 5, 37), (2, 4, 8, 8), (1, 6, 19)):
        x = (torch.randn(shape, generator=generator) * 3 + 1).to(dtype)
        channels = shape[1]
        weight, bias = (torch.randn(channels, generator=generator).to(_parameter_dtypes(x)[-1]) for _ in range(2))
        for w, b in ((weight, bias), (None, None), (weight, None), (None, bias)):
            y, mean, invstd = torch.ops.aten._native_batch_norm_legit.no_stats(x, w, b, True, 0.0, 1e-5)
            alpha, beta = _affine(x, w, b, mean, invstd)
            if not torch.equal(torch.addcmul(beta, x, alpha).to(y.dtype), y):
                return False
    return True


def _one_pass_exact(x2) -> bool:
    """Whether BatchNorm's training output on ``x2`` is ``_apply_affine`` of its statistics bit for bit: on the CPU
    where the probe shows it (``_saved_statistics_reproduce``). Not while torch.compile traces: the probe runs
    eagerly, once, and the traced ATen call is as exact."""
    return x2.device.type == "cpu" and not torch.compiler.is_compiling() and _saved_statistics_reproduce(x2.dtype)


def _apply_affine(x2, weight, bias, mean, invstd):
    alpha, beta = _affine(x2, weight, bias, mean, invstd)
    return torch.addcmul(beta, x2, alpha).to(x2.dtype)


def _renormalise(x2, weight, bias, mean, invstd, running_mean, running_var, training, eps):
    """BatchNorm's output again, in backward, bit for bit as forward computed it: in training one pass from the
    saved statistics where that reproduces ATen (``_one_pass_exact``), else ATen's batch norm again (statistics
    recomputed, running statistics left alone)."""
    if training and _one_pass_exact(x2):
        return _apply_affine(x2, weight, bias, mean, invstd)
    y, _, _ = _normalise(x2, weight, bias, None if training else running_mean, None if training else running_var,
                         training, 0.0, eps)
    return y


_MAX_NORMALISING_STEPS = 64  # the normalised_neuron kernels buffer a block's T rows: one backward chunk


def _normalised_neuron_ops():
    forward = optional_op("normalised_neuron_forward")
    return (forward, torch.ops.spikeops.normalised_neuron_backward) if forward is not None else None


@functools.lru_cache(maxsize=None)
def _kernel_rounding() -> bool | None:
    """The ``fused_multiply_add`` flag under which ``spikeops::normalised_neuron_forward`` feeds the neuron
    ATen's float32 training batch-norm output bit for bit, or None when neither does. Probed once: an IF neuron
    that never fires stores its first membrane, which is exactly its input."""
    ops = _normalised_neuron_ops()
    if ops is None:
        return None
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 9, 37, generator=generator) * torch.exp(3 * torch.randn(1, 4, 9, 37, generator=generator))
    weight, bias = torch.randn(9, generator=generator), torch.randn(9, generator=generator)
    x2 = x.flatten(0, 1)
    expected, mean, invstd = torch.ops.aten._native_batch_norm_legit.no_stats(x2, weight, bias, True, 0.0, 1e-5)
    alpha, beta = _affine(x2, weight, bias, mean, invstd)
    silent = config_from_surrogate(None, tau=None, decay_input=True, v_threshold=3e38, v_reset=0.0,
                                   detach_reset=False).as_list()
    for rounding in (True, False):
        _, _, membrane = ops[0](x.view(1, -1), alpha.reshape(-1), beta.reshape(-1), 37, rounding, x.new_zeros(1),
                                None, silent, True, False)
        if torch.equal(membrane.view(x2.shape), expected):
            return rounding
    return None


def _normalising_in_kernel(x, training, pool, backend, running_mean, running_var) -> bool | None:
    """The rounding flag (``_kernel_rounding``) when the neuron kernel can normalise ``x`` [T, B, C, *] itself, so
    that the normalised tensor is never written: CPU float32 training without a pool, at most 64 steps, where
    normalising from the statistics in one pass is exact (``_one_pass_exact``) and they come from
    ``batch_statistics``; else None."""
    if not training or pool is not None or backend != "cpu" or x.dtype != torch.float32 \
            or x.shape[0] > _MAX_NORMALISING_STEPS or not _one_pass_exact(x):
        return None
    if not kernel_applies(x.flatten(0, 1), running_mean, running_var):
        return None
    return _kernel_rounding()


@signature_once
class BatchNormNeuronFunction(torch.autograd.Function):
    """x [T, B, C, *] contiguous -> (spikes [T, N], v_last [N], v_seq) with N = B*C*prod(*)."""

    @staticmethod
    def forward(x, v0, weight, bias, leak, running_mean, running_var, training, momentum, eps, cfg: NeuronConfig,
                store_v_seq, store_v_last, backend, pool, rounding):
        # rounding: _normalising_in_kernel's answer for these arguments, decided once by the caller
        T, layout = x.shape[0], naive.BatchNormLayout(x.shape, pooled=pool is not None)
        if rounding is not None:
            x2 = layout.to(x)
            mean, invstd = batch_statistics(x2, running_mean, running_var, momentum, eps)
            alpha, beta = _affine(x2, weight, bias, mean, invstd)
            spikes, v_last, v_seq = _normalised_neuron_ops()[0](
                x.view(T, -1), alpha.reshape(-1), beta.reshape(-1), math.prod(x.shape[3:]), rounding, v0, leak,
                cfg.as_list(), store_v_seq, store_v_last)
            return spikes, v_last, v_seq, mean, invstd
        y, mean, invstd = _normalise(layout.to(x), weight, bias, running_mean, running_var, training, momentum, eps)
        y = layout.back(y)
        if pool is not None:
            y = max_pool2d_values(y.flatten(0, 1), *pool)  # the kernel SpikeMaxPool2d's forward runs
        forward_op, _ = forward_backward_ops("neuron", backend)
        spikes, v_last, v_seq = forward_op(y.reshape(T, -1), v0, leak, cfg.as_list(), store_v_seq, store_v_last)
        return spikes, v_last, v_seq, mean, invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, v0, weight, bias, leak, running_mean, running_var, training, momentum, eps, cfg, store_v_seq, store_v_last,
         backend, pool, rounding) = inputs
        mean, invstd = output[3], output[4]
        # In eval the running statistics normalise; they are buffers the optimizer does not change.
        ctx.save_for_backward(x, v0, weight, bias, leak, mean, invstd,
                              None if training else running_mean, None if training else running_var)
        ctx.training, ctx.eps, ctx.cfg, ctx.store_v_seq, ctx.backend = training, eps, cfg, store_v_seq, backend
        ctx.store_v_last = store_v_last
        ctx.pool = pool
        ctx.rounding = rounding
        ctx.mark_non_differentiable(mean, invstd)
        ctx.set_materialize_grads(False)  # unused outputs' gradients stay None (NeuronFunction.setup_context)
        if not store_v_last:
            ctx.mark_non_differentiable(output[1])
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
                                                               ctx.store_v_seq, ctx.pool)
                return (spikes, v_last if ctx.store_v_last else x_.new_empty(0),
                        v_seq if ctx.store_v_seq else x_.new_empty(0))
            grads = reference_backward(reference, (x, v0, weight, bias, leak), (grad_spikes, grad_v_last, grad_v_seq),
                                       ctx.needs_input_grad[:5])
            return (*grads, *([None] * 11))
        layout = naive.BatchNormLayout(x.shape, pooled=ctx.pool is not None)
        x2 = layout.to(x)
        needs = dict(need_v0_grad=ctx.needs_input_grad[1], need_leak_grad=leak is not None and ctx.needs_input_grad[4])
        if ctx.rounding is not None:  # the kernel normalises x again on the fly, as forward's did
            alpha, beta = _affine(x2, weight, bias, mean, invstd)
            normalised_backward = functools.partial(_normalised_backward, _normalised_neuron_ops()[1],
                                                    alpha.reshape(-1), beta.reshape(-1), math.prod(x.shape[3:]),
                                                    ctx.rounding)
            grad_y, grad_v0, grad_leak = fused_backward(ctx, x.view(x.shape[0], -1), v0, leak, grad_spikes,
                                                        grad_v_last, grad_v_seq, backward_op=normalised_backward,
                                                        **needs)
        else:
            y = layout.back(_renormalise(x2, weight, bias, mean, invstd, running_mean, running_var, ctx.training,
                                         ctx.eps))
            if ctx.pool is None:
                pooled = y
            else:
                y = y.flatten(0, 1)
                pooled = max_pool2d_values(y, *ctx.pool)
            pooled_shape = pooled.shape
            grad_pooled, grad_v0, grad_leak = fused_backward(ctx, pooled.reshape(x.shape[0], -1), v0, leak,
                                                             grad_spikes, grad_v_last, grad_v_seq, **needs)
            del pooled
            if ctx.pool is None:
                grad_y = grad_pooled
            else:
                grad_y = max_pool2d_recompute_backward(grad_pooled.view(pooled_shape), y, *ctx.pool)
            del y
        need = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[2],
                bias is not None and ctx.needs_input_grad[3]]
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            layout.to(grad_y.view(x.shape)), x2, weight, running_mean, running_var, mean if ctx.training else None,
            invstd if ctx.training else None, ctx.training, ctx.eps, need)
        return (layout.back(grad_x) if need[0] else None, grad_v0, grad_weight if need[1] else None,
                grad_bias if need[2] else None, grad_leak, *([None] * 11))


def _normalised_backward(op, scale, shift, inner, rounding, grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, cfg,
                         need_leak_grad):
    """``spikeops::normalised_neuron_backward`` with neuron_backward's arguments (for ``fused_backward``)."""
    return op(grad_spikes, grad_v_seq, grad_v_last, x, scale, shift, inner, rounding, v0, leak, cfg, need_leak_grad)


def _register_normalised_fakes() -> None:
    """Fake kernels of the normalised_neuron ops (opcheck, torch.compile): the neuron's, the affine aside."""
    if _normalised_neuron_ops() is None:
        return

    @torch.library.register_fake("spikeops::normalised_neuron_forward")
    def _forward_fake(x, scale, shift, inner, fused_multiply_add, v0, leak, cfg, store_v_seq, store_v_last):
        return fake_forward(x, v0, leak, cfg, store_v_seq, store_v_last)

    @torch.library.register_fake("spikeops::normalised_neuron_backward")
    def _backward_fake(grad_spikes, grad_v_seq, grad_v_last, x, scale, shift, inner, fused_multiply_add, v0, leak,
                       cfg, need_leak_grad):
        return fake_backward(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, cfg, need_leak_grad)


def _parameter_dtypes(x: torch.Tensor) -> tuple[torch.dtype, ...]:
    """What ATen's batch norm takes beside x: x's dtype, or float32 for float16/bfloat16 x (nn.BatchNorm's
    float32 parameters under autocast)."""
    return (x.dtype, torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else (x.dtype,)


def _check_batchnorm(x, weight, bias, running_mean, running_var, training, momentum, eps) -> int:
    """nn.BatchNorm's argument checks, and those its kernel would fail on, naming the argument; returns the
    channel count."""
    if x.dim() < 3:
        raise ValueError(f"x: expected a time-major [T, B, C, *] tensor, got shape {tuple(x.shape)}")
    channels = x.shape[2]
    allowed = _parameter_dtypes(x)
    given = [(name, tensor) for name, tensor in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                                                 ("running_var", running_var)) if tensor is not None]
    for name, tensor in given:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name}: expected a floating dtype {tuple(str(d) for d in allowed)}, got {tensor.dtype}")
        if tensor.shape != (channels,) or tensor.device != x.device:
            raise ValueError(f"{name}: expected shape ({channels},) (x's channel count) on {x.device}, got "
                             f"{tuple(tensor.shape)} on {tensor.device}")
        if tensor.dtype not in allowed or tensor.dtype != given[0][1].dtype:
            raise TypeError(f"{name}: expected dtype {' or '.join(str(d) for d in allowed)} (x is {x.dtype}), the "
                            f"same as {given[0][0]}'s ({given[0][1].dtype}), got {tensor.dtype}")
    if (running_mean is None) != (running_var is None):
        missing, other = ("running_mean", "running_var") if running_mean is None else ("running_var", "running_mean")
        raise ValueError(f"{missing}: expected a tensor when {other} is given (both or neither), got None")
    if not training and running_mean is None:
        raise ValueError("running_mean: expected a tensor with training=False (evaluation normalises with the "
                         "running statistics), got None")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                 or not 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum: expected a number in [0, 1] or None, got {momentum!r}")
    if training and math.prod(x.shape[:2]) * math.prod(x.shape[3:]) == 1:
        # nn.functional.batch_norm refuses it: the variance of one value says nothing.
        raise ValueError(f"x: expected more than 1 value per channel when training, got shape {tuple(x.shape)}")
    return channels


def _pool_args(pool, x: torch.Tensor):
    """``pool`` (a dict of F.max_pool2d's arguments, or None) as the tuple ATen's kernels take, checked."""
    if pool is None:
        return None
    if not isinstance(pool, dict) or "kernel_size" not in pool or set(pool) - set(_POOL_KEYS):
        raise ValueError(f"pool: expected None or a dict of max-pool arguments {_POOL_KEYS} with kernel_size, got "
                         f"{pool!r}")
    if x.dim() != 5:
        raise ValueError(f"pool: a max-pool needs x of shape [T, B, C, H, W], got shape {tuple(x.shape)}")
    kernel_size, stride, padding, dilation = max_pool_args(pool["kernel_size"], pool.get("stride"),
                                                           pool.get("padding", 0), pool.get("dilation", 1))
    return kernel_size, stride, padding, dilation, bool(pool.get("ceil_mode", False))


def pooled_shape(x: torch.Tensor, pool) -> torch.Size:
    """The shape of the neuron's input, [T, B, C, *], for BatchNorm input ``x`` and ``pool`` (see
    ``batchnorm_neuron``); bad pool arguments raise as F.max_pool2d raises them."""
    args = _pool_args(pool, x)
    if args is None:
        return x.shape
    hashable = tuple(tuple(a) if isinstance(a, list) else a for a in args)
    return torch.Size((*x.shape[:2], *_pooled_plane(tuple(x.shape[2:]), hashable)))


@functools.lru_cache(maxsize=256)
def _pooled_plane(shape: tuple, args: tuple) -> torch.Size:
    """[C, H', W'] of ATen's max-pool of a [C, H, W] plane (its shape rule and checks, on the meta device: a
    hundred microseconds a call, so once per shape)."""
    return torch.ops.aten.max_pool2d(torch.empty(shape, device="meta"), *args).shape


def batchnorm_neuron(x: torch.Tensor, v0=None, *, weight=None, bias=None, running_mean=None, running_var=None,
                     training: bool = True, momentum: float = 0.1, eps: float = 1e-5, cfg: NeuronConfig,
                     leak: torch.Tensor | None = None, backend: str = "auto", store_v_seq: bool = False,
                     store_v_last: bool = True, num_batches_tracked: torch.Tensor | None = None,
                     pool: dict | None = None):
    """``neuron(BatchNorm(x))`` for time-major ``x`` [T, B, C, *] with BatchNorm over the flattened T*B batch
    (SpikingJelly's SeqToANNContainer / multi-step BatchNorm, the backbones' ConvBN), keeping for backward
    only ``x``, the per-channel statistics and ``v0``.

    BatchNorm arguments as ``nn.functional.batch_norm`` (``momentum=None``: cumulative average, which needs
    ``num_batches_tracked``, updated in place as nn.BatchNorm does). ``pool``: None, or a dict of
    ``F.max_pool2d``'s arguments (``kernel_size``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``) for
    ``neuron(max_pool2d(BatchNorm(x)))`` on x [T, B, C, H, W], the pool over the flattened T*B batch too.
    Returns (spikes [T, B, C, *], v_last [B, C, *] or None, v_seq or None), as ``neuron_multi_step`` (whose
    ``store_v_last``, ``store_v_seq`` these are), of the pooled shape (``pooled_shape``) with ``pool``.
    """
    check_input(x)
    check_flag(store_v_last, "store_v_last")
    _check_batchnorm(x, weight, bias, running_mean, running_var, training, momentum, eps)
    if x.shape[0] == 0:
        raise ValueError(f"x: expected a time-major tensor [T, B, C, *] with T >= 1, got shape {tuple(x.shape)}")
    shape = pooled_shape(x, pool)
    pool = _pool_args(pool, x)
    # The membrane has the neuron's shape: with a pool, an expanded one-element stand-in of x's dtype and device.
    v0, leak, backend = prepare_call(x if pool is None else x.new_empty(()).expand(shape), v0, leak, cfg, backend)
    # ATen's CPU batch norm reads its per-channel tensors as if contiguous: a broadcast (stride-0) weight gave
    # wrong values read past its storage. The running statistics updated in training are written in place
    # through their strides, so only those read in evaluation are copied.
    weight, bias = (t.contiguous() if t is not None else None for t in (weight, bias))
    if not training and running_mean is not None:
        running_mean, running_var = running_mean.contiguous(), running_var.contiguous()
    # State changes only once every argument passed: a refused call leaves the module as it was.
    if training and running_mean is not None and num_batches_tracked is not None:
        num_batches_tracked.add_(1)  # as nn.BatchNorm: before the update, which may read it
        momentum = 1.0 / float(num_batches_tracked) if momentum is None else momentum
    elif momentum is None:
        momentum = 0.0
    if backend == "torch" or x.numel() == 0:
        spikes, v_last, v_seq = naive.batchnorm_neuron(x, v0, weight, bias, running_mean, running_var, training,
                                                       momentum, eps, cfg, leak, store_v_seq, pool)
    else:
        rounding = _normalising_in_kernel(x, training, pool, backend, running_mean, running_var)
        spikes, v_last, v_seq, _, _ = BatchNormNeuronFunction.apply(
            x.contiguous(), v0.reshape(-1).contiguous(), weight, bias, leak, running_mean, running_var, training,
            momentum, eps, cfg, store_v_seq, store_v_last, backend, pool, rounding)
    return (mark_neuron_spikes(spikes.view(shape), cfg), v_last.view(shape[1:]) if store_v_last else None,
            v_seq.view(shape) if store_v_seq else None)


_register_normalised_fakes()
