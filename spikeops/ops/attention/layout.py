"""Input checks and index geometry shared by every spiking-attention operator.

Two layouts are accepted, both time-major:
  * ``[T, B, C, N]`` with a ``heads`` argument (head g owns channels [g*d, (g+1)*d), d = C / heads), the layout
    of the official QKFormer / Spikformer-ImageNet code;
  * ``[T, B, h, N, d]`` (heads already split, tokens before channels), ``heads`` may be omitted.

The fused "reduce, fire, gate" kernels see one time slice as ``M = G*L`` neurons; neuron ``m`` (group
``g = m // L``, lane ``l = m % L``) sums the R elements at ``g*stride_g + l*stride_l + r*stride_r``. ``geometry``
below produces those six numbers for each layout and reduction axis, so the kernels never know about heads.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TOKEN, CHANNEL = "token", "channel"


class AttentionShape(NamedTuple):
    T: int
    B: int
    heads: int
    N: int   # tokens
    d: int   # channels per head
    heads_split: bool  # True for [T, B, h, N, d], False for [T, B, C, N]


def check_dense(x, name: str) -> None:
    """Sparse, nested and other non-strided tensors are refused by name (the kernels index dense memory)."""
    if isinstance(x, torch.Tensor) and (x.is_nested or x.layout != torch.strided):
        kind = "a nested tensor" if x.is_nested else f"layout {x.layout}"
        raise TypeError(f"{name}: expected a dense (torch.strided) tensor, got {kind}")


def check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    check_dense(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype {tuple(str(d) for d in FLOAT_DTYPES)}, got {x.dtype}")


def check_attention_inputs(tensors: dict, heads) -> AttentionShape:
    """Validates Q/K/V-like inputs (same shape, dtype, device) and returns their shape in head terms.

    Raises TypeError/ValueError naming the offending argument before any kernel runs."""
    (first_name, first), *rest = tensors.items()
    for name, x in tensors.items():
        check_tensor(x, name)
    for name, x in rest:
        if x.shape != first.shape:
            raise ValueError(f"{name}: expected the shape of {first_name} {tuple(first.shape)}, got {tuple(x.shape)}")
        if x.dtype != first.dtype:
            raise TypeError(f"{name}: expected the dtype of {first_name} ({first.dtype}), got {x.dtype}")
        if x.device != first.device:
            raise ValueError(f"{name}: expected a tensor on {first.device} ({first_name}'s device), got {x.device}")
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
        raise ValueError(f"heads: expected a positive int, got {heads!r}")
    shape = tuple(first.shape)
    if first.dim() == 4:
        T, B, C, N = shape
        if heads is None:
            raise ValueError(f"heads: required for [T, B, C, N] input ({first_name} has shape {shape})")
        if C % heads != 0:
            raise ValueError(f"heads: must divide the channel count C={C} of {first_name} {shape}, got heads={heads}")
        result = AttentionShape(T, B, heads, N, C // heads, False)
    elif first.dim() == 5:
        T, B, h, N, d = shape
        if heads is not None and heads != h:
            raise ValueError(f"heads: {first_name} is [T, B, h, N, d] = {shape} with h={h}, got heads={heads}")
        result = AttentionShape(T, B, h, N, d, True)
    else:
        raise ValueError(f"{first_name}: expected [T, B, C, N] (with heads=) or [T, B, h, N, d], got shape {shape}")
    if T < 1:
        raise ValueError(f"{first_name}: expected T >= 1 time steps, got shape {shape}")
    return result


class Geometry(NamedTuple):
    """Neuron m = (g, l) of one time slice sums R elements at g*stride_g + l*stride_l + r*stride_r."""
    M: int
    R: int
    L: int
    stride_g: int
    stride_r: int
    stride_l: int

    def as_list(self) -> list[int]:
        return list(self)


def geometry(s: AttentionShape, reduce: str) -> Geometry:
    """``reduce="token"``: one neuron per token and head, summing the head's d channels.
    ``reduce="channel"``: one neuron per channel, summing over the N tokens."""
    B, h, N, d = s.B, s.heads, s.N, s.d
    if reduce == TOKEN:
        if s.heads_split:  # [B, h, N, d]: d contiguous channels per token
            return Geometry(M=B * h * N, R=d, L=1, stride_g=d, stride_r=1, stride_l=0)
        return Geometry(M=B * h * N, R=d, L=N, stride_g=d * N, stride_r=N, stride_l=1)  # [B, h, d, N]
    if reduce == CHANNEL:
        if s.heads_split:
            return Geometry(M=B * h * d, R=N, L=d, stride_g=N * d, stride_r=d, stride_l=1)
        return Geometry(M=B * h * d, R=N, L=1, stride_g=N, stride_r=1, stride_l=0)  # [B, C, N]
    raise ValueError(f"reduce: expected {TOKEN!r} or {CHANNEL!r}, got {reduce!r}")


def reduced_shape(s: AttentionShape, reduce: str) -> tuple[int, ...]:
    """Shape of the attention spikes (keepdim over the reduced axis), in the input's layout."""
    if s.heads_split:
        return (s.T, s.B, s.heads, s.N, 1) if reduce == TOKEN else (s.T, s.B, s.heads, 1, s.d)
    return (s.T, s.B, s.heads, 1, s.N) if reduce == TOKEN else (s.T, s.B, s.heads * s.d, 1)
