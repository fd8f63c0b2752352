"""The fused multi-step neuron operator: torch.library registrations, the autograd Function and the
one public entry point ``neuron_multi_step`` that validates, picks a backend and runs it.

Forward saves only x (which autograd usually holds anyway), v0 and PLIF's leak; backward recomputes H
and the spikes from them inside the kernel (bit for bit what forward computed) instead of saving them.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import backends
from .._autograd import recording_backward, reference_backward, signature_once
from .._dispatch import forward_backward_ops, register_fakes
from ..spike_pack import mark_neuron_spikes
from . import naive
from .config import NeuronConfig

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------- torch.library registrations
def _leak_grad_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def fake_forward(x, v0, leak, cfg, store_v_seq, store_v_last=True):
    v_seq = torch.empty_like(x) if store_v_seq else x.new_empty(0)
    return torch.empty_like(x), x.new_empty(x.shape[1] if store_v_last else 0), v_seq


def fake_backward(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, cfg, need_leak_grad):
    n = x.shape[1] if need_leak_grad else 0
    return torch.empty_like(x), x.new_empty(x.shape[1]), x.new_empty(n, dtype=_leak_grad_dtype(x))


def _check_operator_tensors(x, v0, leak, cfg, **gradients) -> NeuronConfig:
    """What the C++ operators check (csrc/neuron/neuron_host.h), for the Triton ones: they are public too."""
    config = NeuronConfig.from_list(cfg)
    if x.dim() != 2 or not x.is_contiguous():
        raise ValueError(f"x: expected a contiguous [T, N] tensor, got shape {tuple(x.shape)}")
    if v0.shape not in (x.shape[1:], (1,)) or v0.dtype != x.dtype or v0.device != x.device or not v0.is_contiguous():
        raise ValueError(f"v0: expected a contiguous [{x.shape[1]}] or [1] tensor of x's dtype and device, got shape "
                         f"{tuple(v0.shape)} {v0.dtype} on {v0.device}")
    if (leak is not None) != config.law.learnable_leak:
        raise ValueError(f"leak: the {config.law.name!r} charge law "
                         f"{'needs' if config.law.learnable_leak else 'takes no'} leak tensor")
    if leak is not None and (leak.numel() != 1 or leak.dtype != _leak_grad_dtype(x) or leak.device != x.device):
        raise ValueError(f"leak: expected a one-element {_leak_grad_dtype(x)} tensor on {x.device}, got "
                         f"{leak.numel()} elements {leak.dtype} on {leak.device}")
    for name, grad in gradients.items():
        shape = x.shape[1:] if name == "grad_v_last" else x.shape  # one membrane gradient a neuron
        if grad is not None and (grad.shape != shape or grad.dtype != x.dtype or grad.device != x.device
                                 or not grad.is_contiguous()):
            raise ValueError(f"{name}: expected a contiguous tensor of shape {tuple(shape)} and dtype "
                             f"{x.dtype}, got {tuple(grad.shape)} {grad.dtype}")
    return config


@torch.library.custom_op("spikeops::neuron_forward_triton", mutates_args=())
def _neuron_forward_triton(x: torch.Tensor, v0: torch.Tensor, leak: Optional[torch.Tensor], cfg: list[float],
                           store_v_seq: bool, store_v_last: bool = True) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    from ...kernels import neuron as triton_neuron
    return triton_neuron.neuron_forward(x, v0, leak, _check_operator_tensors(x, v0, leak, cfg), store_v_seq,
                                        store_v_last)


@torch.library.custom_op("spikeops::neuron_backward_triton", mutates_args=())
def _neuron_backward_triton(grad_spikes: torch.Tensor, grad_v_seq: Optional[torch.Tensor],
                            grad_v_last: Optional[torch.Tensor], x: torch.Tensor, v0: torch.Tensor,
                            leak: Optional[torch.Tensor], cfg: list[float],
                            need_leak_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ...kernels import neuron as triton_neuron
    config = _check_operator_tensors(x, v0, leak, cfg, grad_spikes=grad_spikes, grad_v_seq=grad_v_seq,
                                     grad_v_last=grad_v_last)
    grad_x, grad_v0, grad_leak = triton_neuron.neuron_backward(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak,
                                                                config, need_leak_grad)
    return grad_x, grad_v0, grad_leak.to(_leak_grad_dtype(x))


register_fakes("neuron", fake_forward, fake_backward)


def _ops(backend: str):
    return forward_backward_ops("neuron", backend)


def shared_membrane_grad(grad_v0: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """The kernels' per-neuron dL/dv0, summed when one v0 value served every neuron."""
    return grad_v0 if grad_v0.shape == v0.shape else grad_v0.sum().reshape(v0.shape)


def deterministic_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a 1-D tensor in an order fixed by its length alone: rows of 1024 are summed one row per
    task, level by level, so the result does not depend on the thread count (a plain .sum() splits the
    work by threads and rounds differently). The whole rows are a view and the short last row is summed on
    its own: padding it would copy the tensor, which cost as much as the sums."""
    if values.numel() == 0:
        return values.new_zeros(())
    while values.numel() > 1:
        whole = values.numel() - values.numel() % 1024
        rows = values[:whole].view(-1, 1024).sum(dim=1)
        values = torch.cat([rows, values[whole:].sum().reshape(1)]) if whole < values.numel() else rows
    return values.reshape(())


def fused_backward(ctx, x, v0, leak, grad_spikes, grad_v_last, grad_v_seq, *, need_v0_grad: bool,
                   need_leak_grad: bool, backward_op=None):
    """The fused BPTT of an autograd Function whose neuron input was ``x`` [T, N] (``ctx.cfg``,
    ``ctx.backend``): (grad_x, grad_v0 in v0's shape or None, grad_leak or None). ``backward_op``: a kernel with
    neuron_backward's arguments to run instead of the backend's (the fused BatchNorm's normalising one)."""
    if backward_op is None:
        _, backward_op = _ops(ctx.backend)
    grad_spikes = torch.zeros_like(x) if grad_spikes is None else grad_spikes.contiguous()
    # A membrane output not stored is empty; a traced backward (torch.compile) hands it an empty gradient
    # rather than None.
    grad_v_seq = grad_v_seq.contiguous() if grad_v_seq is not None and grad_v_seq.numel() else None
    grad_v_last = grad_v_last.contiguous() if grad_v_last is not None and grad_v_last.numel() else None
    grad_x, grad_v0, grad_leak = backward_op(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, ctx.cfg.as_list(),
                                             need_leak_grad)
    grad_leak = deterministic_sum(grad_leak).reshape(leak.shape).to(leak.dtype) if need_leak_grad else None
    # A resting membrane (the usual v0) needs no gradient: skip the pass over N values that would sum it.
    return grad_x, shared_membrane_grad(grad_v0, v0) if need_v0_grad else None, grad_leak


# ---------------------------------------------------------------- autograd
@signature_once
class NeuronFunction(torch.autograd.Function):
    """Fused forward over all T in one launch, fused BPTT in one launch. x is [T, N] contiguous.

    Double backward differentiates the reference on the saved inputs (spikeops/ops/_autograd.py); under
    torch.func.vmap a batch dimension of x and v0 becomes more neurons of one launch. A membrane output not
    stored (store_v_seq / store_v_last False) is an empty tensor that carries no gradient."""

    @staticmethod
    def forward(x, v0, leak, cfg: NeuronConfig, store_v_seq: bool, store_v_last: bool, backend: str):
        forward_op, _ = _ops(backend)
        return tuple(forward_op(x, v0, leak, cfg.as_list(), store_v_seq, store_v_last))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, v0, leak, cfg, store_v_seq, store_v_last, backend = inputs
        ctx.save_for_backward(x, v0, leak)
        ctx.cfg, ctx.store_v_seq, ctx.store_v_last, ctx.backend = cfg, store_v_seq, store_v_last, backend
        # An output the loss does not use (usually v_last) comes to backward as None, not as a zero tensor
        # that costs a fill here and a read in the kernel: fused_backward and reference_backward take None.
        ctx.set_materialize_grads(False)
        if not store_v_last:
            ctx.mark_non_differentiable(output[1])
        if not store_v_seq:
            ctx.mark_non_differentiable(output[2])

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq):
        x, v0, leak = ctx.saved_tensors
        if recording_backward():
            def reference(x_, v0_, leak_):
                spikes, v_last, v_seq = naive.multi_step(x_, v0_, ctx.cfg, leak_, ctx.store_v_seq)
                return (spikes, v_last if ctx.store_v_last else x_.new_empty(0),
                        v_seq if ctx.store_v_seq else x_.new_empty(0))
            grads = reference_backward(reference, (x, v0, leak), (grad_spikes, grad_v_last, grad_v_seq),
                                       ctx.needs_input_grad[:3])
            return (*grads, None, None, None, None)
        grad_x, grad_v0, grad_leak = fused_backward(ctx, x, v0, leak, grad_spikes, grad_v_last, grad_v_seq,
                                                    need_v0_grad=ctx.needs_input_grad[1],
                                                    need_leak_grad=leak is not None and ctx.needs_input_grad[2])
        return grad_x, grad_v0, grad_leak, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, v0, leak, cfg, store_v_seq, store_v_last, backend):
        x_dim, v0_dim, leak_dim = in_dims[:3]
        if leak_dim is not None:  # one leak per batch entry: one launch each
            results = [NeuronFunction.apply(x.select(x_dim, i).contiguous() if x_dim is not None else x,
                                            v0.select(v0_dim, i).contiguous() if v0_dim is not None else v0,
                                            leak.select(leak_dim, i), cfg, store_v_seq, store_v_last, backend)
                       for i in range(info.batch_size)]
            return tuple(torch.stack(r) for r in zip(*results)), (0, 0, 0)
        # The neuron is element-wise over neurons: the batch becomes B times as many neurons.
        T, B = x.shape[0] if x_dim != 0 else x.shape[1], info.batch_size
        xb = (x.movedim(x_dim, 1) if x_dim is not None else x.unsqueeze(1).expand(T, B, *x.shape[1:]))
        if v0_dim is not None:
            v0b = v0.movedim(v0_dim, 0)
        else:  # a shared resting membrane stays shared
            v0b = v0 if v0.numel() == 1 else v0.unsqueeze(0).expand(B, *v0.shape)
        spikes, v_last, v_seq = NeuronFunction.apply(xb.reshape(T, -1).contiguous(), v0b.reshape(-1).contiguous(),
                                                     leak, cfg, store_v_seq, store_v_last, backend)
        spikes = spikes.view(T, B, -1)
        v_last = v_last.view(B, -1) if store_v_last else v_last.new_empty(B, 0)
        v_seq = v_seq.view(T, B, -1) if store_v_seq else v_seq.new_empty(B, 0)
        return (spikes, v_last, v_seq), (1, 0, 1 if store_v_seq else 0)


# ---------------------------------------------------------------- public entry point
def check_input(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype {tuple(str(d) for d in FLOAT_DTYPES)}, got {x.dtype}")


def prepare_membrane(x: torch.Tensor, v0) -> torch.Tensor:
    """The initial membrane for x [T, *]: a tensor broadcast to x.shape[1:] in x's dtype, a number, or None (0)."""
    neuron_shape = x.shape[1:]
    if v0 is None or isinstance(v0, (int, float)):
        # One value for every neuron: the kernels broadcast it, and backward keeps 4 bytes, not one a neuron.
        v0 = torch.full((1,) * len(neuron_shape), 0.0 if v0 is None else float(v0), dtype=x.dtype, device=x.device)
    else:
        check_input(v0, "v0")
        if v0.device != x.device:
            raise ValueError(f"v0: expected a tensor on {x.device} (x's device), got {v0.device}")
        v0 = v0.to(x.dtype)
        try:
            expanded = v0.expand(neuron_shape)
        except RuntimeError:
            raise ValueError(f"v0: expected shape {tuple(neuron_shape)} (x.shape[1:]), got {tuple(v0.shape)}") from None
        # A one-value tensor stays one value, as a number does: expanded, it would be copied to every neuron
        # (a 6 MB write and read at the headline shape) before the kernel runs.
        v0 = v0.reshape((1,) * len(neuron_shape)) if v0.numel() == 1 else expanded
        if v0.is_inference() and not torch.is_inference_mode_enabled():
            # A membrane left by torch.inference_mode(): autograd cannot save an inference tensor.
            v0 = v0.clone()
    return v0


def prepare_call(x: torch.Tensor, v0, leak, cfg: NeuronConfig, backend: str):
    """What every neuron entry point checks and converts before a kernel runs: the membrane
    (prepare_membrane), PLIF's leak as the charge law asks, and a backend that runs x. Returns (v0, leak,
    backend); for a fused backend the leak is a one-element tensor in the kernels' precision."""
    v0 = prepare_membrane(x, v0)
    if leak is not None:
        check_input(leak, "leak")
        if leak.numel() != 1 or leak.device != x.device:
            raise ValueError(f"leak: expected a one-element tensor on {x.device}, got shape {tuple(leak.shape)} on {leak.device}")
    if (leak is not None) != cfg.law.learnable_leak:
        raise ValueError(f"leak: the {cfg.law.name!r} charge law {'needs' if cfg.law.learnable_leak else 'takes no'} "
                         "leak tensor")
    backend = backends.resolve(backend, x.device)
    if backend == "triton" and x.dtype == torch.float64:
        raise TypeError("x: the 'triton' backend supports float32, float16 and bfloat16; use backend='cpu' or 'torch' for float64")
    if backend != "torch" and leak is not None:
        leak = leak.reshape(1).to(_leak_grad_dtype(x))
    return v0, leak, backend


def check_flag(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


def neuron_multi_step(x: torch.Tensor, v0=None, *, cfg: NeuronConfig, leak: torch.Tensor | None = None,
                      backend: str = "auto", store_v_seq: bool = False, store_v_last: bool = True):
    """Runs the neuron over the leading time dimension of ``x`` ([T, *]).

    v0: initial membrane, a tensor of shape x.shape[1:] (or broadcastable to it) or a number; None is 0.
    store_v_last=False: the caller wants no final membrane (a stateless neuron), so the kernels neither
    allocate nor write it; the spikes, v_seq and every gradient are the same bit for bit.
    Returns (spikes [T, *] in x's dtype, v_last [*] or None, v_seq [T, *] or None).
    """
    check_input(x)
    check_flag(store_v_last, "store_v_last")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x: expected a time-major tensor [T, *] with T >= 1, got shape {tuple(x.shape)}")
    neuron_shape = x.shape[1:]
    v0, leak, backend = prepare_call(x, v0, leak, cfg, backend)
    if backend == "torch":
        spikes, v_last, v_seq = naive.multi_step(x, v0, cfg, leak, store_v_seq)
        return mark_neuron_spikes(spikes, cfg), v_last if store_v_last else None, v_seq

    T = x.shape[0]
    x2d = x.reshape(T, -1).contiguous()
    v0_1d = v0.reshape(-1).contiguous()
    spikes, v_last, v_seq = NeuronFunction.apply(x2d, v0_1d, leak, cfg, store_v_seq, store_v_last, backend)
    return (mark_neuron_spikes(spikes.view(x.shape), cfg), v_last.view(neuron_shape) if store_v_last else None,
            v_seq.view(x.shape) if store_v_seq else None)
