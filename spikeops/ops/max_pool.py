"""2-D max-pool values and its recomputed-argmax backward, for the operators that keep no int64 indices
(``spike_pack.pool.spike_max_pool2d``, ``batchnorm_neuron(pool=...)``).

* ``max_pool2d_values(x, kernel_size, stride, padding, dilation, ceil_mode)``: ``aten.max_pool2d(x, ...)``.
* ``max_pool2d_recompute_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode)``:
  ``aten.max_pool2d_with_indices_backward(grad, x, ..., indices)`` with the ``indices`` that
  ``aten.max_pool2d_with_indices(x, ...)`` returns, in one call.

The arguments are ATen's (``spike_pack.pool.max_pool_args`` builds them from ``F.max_pool2d``'s). On CPU
float32/float64 tensors both run the C++ kernels ``spikeops::max_pool2d_values`` and
``spikeops::max_pool2d_recompute_backward`` (csrc/max_pool/): bit-identical to ATen's CPU kernels (the same
scan order, NaN and tie rule, and gradient summation order), without writing indices, vectorised. Elsewhere
(CUDA, float16/bfloat16, no compiled extension) and in a backward that autograd records (double backward) they
are the ATen calls above.
"""
from __future__ import annotations

import torch

from ._dispatch import optional_op

__all__ = ["max_pool2d_values", "max_pool2d_recompute_backward"]

_COMPILED_DTYPES = (torch.float32, torch.float64)


def _compiled(name: str, *tensors: torch.Tensor):
    """The C++ kernel ``name`` when every tensor is a CPU float32/float64 one of the same dtype, else None."""
    dtype = tensors[0].dtype
    if dtype not in _COMPILED_DTYPES or any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return None
    return optional_op(name)


def max_pool2d_values(x: torch.Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool) -> torch.Tensor:
    """``aten.max_pool2d(x, ...)``, bit for bit."""
    if (op := _compiled("max_pool2d_values", x)) is not None:
        return op(x, kernel_size, stride, padding, dilation, ceil_mode)
    return torch.ops.aten.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d_recompute_backward(grad: torch.Tensor, x: torch.Tensor, kernel_size, stride, padding, dilation,
                                  ceil_mode: bool) -> torch.Tensor:
    """The gradient of ``aten.max_pool2d(x, ...)`` for output gradient ``grad`` (of the pooled shape), as
    ``aten.max_pool2d_with_indices_backward`` gives it, bit for bit."""
    recorded = torch.is_grad_enabled() and (grad.requires_grad or x.requires_grad)  # the C++ op has no autograd
    if not recorded and (op := _compiled("max_pool2d_recompute_backward", grad, x)) is not None:
        return op(grad, x, kernel_size, stride, padding, dilation, ceil_mode)
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode,
                                                           indices)


def _register_fakes() -> None:
    """Fake kernels of the C++ ops (torch.compile, opcheck): ATen's shape rules and checks, contiguous outputs
    as the kernels return them."""
    if optional_op("max_pool2d_values") is None:
        return

    @torch.library.register_fake("spikeops::max_pool2d_values")
    def _values_fake(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
        shape = torch.ops.aten.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode).shape
        return x.new_empty(shape)

    @torch.library.register_fake("spikeops::max_pool2d_recompute_backward")
    def _backward_fake(grad, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
        shape = torch.ops.aten.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode).shape
        torch._check(grad.shape == shape, lambda: f"grad_output must have the pooled shape {tuple(shape)}, got "
                                                  f"{tuple(grad.shape)}")
        return x.new_empty(x.shape)


_register_fakes()
