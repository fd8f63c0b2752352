"""Autograd plumbing the fused attention operators share: a backward that autograd can differentiate
again (double backward), and a vmap rule by a loop (torch.func).

The fused backward kernels are not themselves differentiable. When autograd records the backward
(``create_graph=True``, as ``torch.autograd.grad(..., create_graph=True)``, ``torch.func.grad`` of a
gradient or ``jacrev``/``hessian`` do), the operators instead recompute their forward with the
pure-PyTorch reference on the saved inputs and differentiate that, so second derivatives are those of
the reference (first derivatives agree with the fused kernels to rounding: the forward spikes are
identical on every backend).
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch


def signature_once(function: type) -> type:
    """Class decorator for an autograd Function with ``setup_context``: torch binds the arguments of every
    ``apply`` to ``forward``'s signature (to fill in defaults), and ``inspect.signature`` rebuilds that
    signature from the code object each time, the largest Python cost of a small call. ``inspect`` honours
    a ``__signature__`` attribute, so the signature is built once, here."""
    forward = function.forward
    forward.__signature__ = inspect.signature(forward)
    return function


def unwrapped(x: torch.Tensor) -> torch.Tensor:
    """The plain tensor under any torch.func wrappers (vmap's batched tensor holds every batch entry), for the
    data checks an operator runs on its inputs (a value check has no per-entry meaning to vmap)."""
    while torch._C._functorch.is_functorch_wrapped_tensor(x):
        x = torch._C._functorch.get_unwrapped(x)
    return x


def recording_backward(*tensors) -> bool:
    """True inside a backward that autograd records (create_graph=True), or one that torch.func runs on its
    wrapped tensors (jacrev, hessian, vmap of a vjp): the fused backward kernels serve neither."""
    if torch.is_grad_enabled():
        return True
    if torch.compiler.is_compiling():  # traced backward: no torch.func wrappers to look for
        return False
    return any(isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def reference_backward(reference: Callable, inputs: Sequence[torch.Tensor | None], grads: Sequence[torch.Tensor | None],
                       needs_input_grad: Sequence[bool]) -> list[torch.Tensor | None]:
    """Gradients of ``reference(*inputs)`` (a tensor or a tuple of tensors) for the inputs that need one, as
    ``torch.func.vjp`` computes them: differentiable again by autograd (the saved ``inputs`` are still attached to
    the forward's graph) and by torch.func, whose wrapped tensors the backward may receive."""
    positions = [i for i, (x, need) in enumerate(zip(inputs, needs_input_grad)) if need and isinstance(x, torch.Tensor)]
    result: list[torch.Tensor | None] = [None] * len(inputs)
    if not positions:
        return result

    def partial(*wanted):
        args = list(inputs)
        for i, x in zip(positions, wanted):
            args[i] = x
        outputs = reference(*args)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    with torch.enable_grad():
        outputs, vjp = torch.func.vjp(partial, *[inputs[i] for i in positions])
        cotangents = tuple(torch.zeros_like(o) if g is None else g.to(o.dtype) for o, g in zip(outputs, grads))
        found = vjp(cotangents)
    for i, g in zip(positions, found):
        result[i] = g
    return result


def loop_vmap(function, info, in_dims, *args):
    """vmap rule of an autograd Function by a loop: each batch entry runs ``function.apply`` on its
    (contiguous) slices, and the outputs are stacked along dimension 0."""
    results = []
    for i in range(info.batch_size):
        sliced = [x.select(d, i).contiguous() if isinstance(x, torch.Tensor) and d is not None else x
                  for x, d in zip(args, in_dims)]
        out = function.apply(*sliced)
        results.append(out if isinstance(out, tuple) else (out,))
    stacked = tuple(torch.stack([r[j] for r in results]) for j in range(len(results[0])))
    if len(stacked) == 1:
        return stacked[0], 0
    return stacked, (0,) * len(stacked)
