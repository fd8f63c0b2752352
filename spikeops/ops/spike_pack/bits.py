"""Exact bit packing of spike tensors into uint8 storage: the C++ kernels ``spikeops::pack_spike_values`` /
``unpack_spike_values`` on CPU tensors (csrc/spike_pack/: floating values to bit planes and back in one pass),
vectorised torch operations elsewhere (``encode`` to codes then ``pack_codes``; ``unpack_codes`` then ``decode``).

A spike tensor of kind

* ``"binary"``  (values {0, 1}) keeps 1 bit per spike,
* ``"ternary"`` (values {-1, 0, 1}, the bipolar neuron) keeps 2 bits,
* ``"integer"`` (values 0..D, the IE-LIF / Multispike neuron, optionally divided by ``norm``) keeps
  ⌈log2(D + 1)⌉ bits,

as bit planes: every element is first mapped to an unsigned code (binary: s, ternary: s + 1, integer: the
level k); plane j holds bit j of every code, 8 codes per byte (bit i of byte b is element 8·b + i). So a
tensor of n elements keeps ``bits · ⌈n / 8⌉`` bytes, whatever ``bits`` is (3 bits for D = 4..7 cost 3/8 B).

Decoding rebuilds the values with the very operations that produced them (``code.to(dtype)``,
``code.to(dtype) - 1``, ``code.to(dtype) / norm``), so a tensor of the declared kind round-trips bit for bit
in every floating dtype. ``spikeops.ops.spike_pack.naive`` is the element-by-element reference.
"""
from __future__ import annotations

import math

import torch

from .._dispatch import optional_op

__all__ = ["KINDS", "FLOAT_DTYPES", "bits_per_spike", "check_kind", "encode", "decode", "pack_codes", "unpack_codes",
           "pack_values", "unpack_values"]

KINDS = ("binary", "ternary", "integer")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_LEVELS = 255  # codes are uint8

_WEIGHTS: dict[torch.device, torch.Tensor] = {}
_SHIFTS: dict[torch.device, torch.Tensor] = {}


def check_kind(kind, levels=None, norm=None) -> tuple[str, int | None, float | None]:
    """Validated (kind, levels, norm). ``levels`` (D) is required for "integer" and refused otherwise; ``norm``
    (the divisor of integer spikes, as in ``multispike(..., norm=)``) only applies to "integer"."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind == "integer":
        if isinstance(levels, bool) or not isinstance(levels, (int, float)) or levels != int(levels) \
                or not 1 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels: expected an integer D in 1..{MAX_LEVELS} for integer spikes, got {levels!r}")
        levels = int(levels)
        if norm is not None:
            if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0:
                raise ValueError(f"norm: expected None or a finite number > 0, got {norm!r}")
            norm = float(norm)
    else:
        if levels is not None and not (kind == "binary" and levels == 1):
            raise ValueError(f"levels: only integer spikes take levels, got levels={levels!r} for {kind!r} spikes")
        if norm is not None:
            raise ValueError(f"norm: only integer spikes take norm, got norm={norm!r} for {kind!r} spikes")
        levels = None
    return kind, levels, norm


def bits_per_spike(kind: str, levels: int | None = None) -> int:
    """1 for binary, 2 for ternary, ⌈log2(D + 1)⌉ for integer levels 0..D."""
    if kind == "binary":
        return 1
    if kind == "ternary":
        return 2
    return max(1, int(levels).bit_length())


def encode(values: torch.Tensor, kind: str, levels: int | None = None, norm: float | None = None) -> torch.Tensor:
    """Unsigned codes (uint8, values' shape and layout) of a spike tensor of the given kind."""
    if kind == "binary":
        return values.ne(0).view(torch.uint8)
    if kind == "ternary":
        return values.to(torch.int8).add_(1).view(torch.uint8)
    if norm is None:
        return values.to(torch.uint8)
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    return (values.to(acc) * norm).round_().to(torch.uint8)  # never in place: values may be acc already


def decode(codes: torch.Tensor, dtype: torch.dtype, kind: str, norm: float | None = None) -> torch.Tensor:
    """Values of the codes in ``dtype``, computed as the neurons compute them."""
    if kind == "ternary":
        return codes.view(torch.int8).sub(1).to(dtype)
    out = codes.to(dtype)
    if kind == "integer" and norm is not None:
        out = out / norm
    return out


def _weights(device) -> torch.Tensor:
    w = _WEIGHTS.get(device)
    if w is None:
        w = _WEIGHTS[device] = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=device)
    return w


def _shifts(device) -> torch.Tensor:
    s = _SHIFTS.get(device)
    if s is None:
        s = _SHIFTS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return s


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes < 2**bits (read in row-major order) -> bit planes, uint8 [bits, ⌈n / 8⌉], in torch operations
    (every device)."""
    codes = codes.reshape(-1)
    n = codes.numel()
    pad = (-n) % 8
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    w = _weights(codes.device)
    groups = codes.view(-1, 8)
    planes = torch.empty((bits, groups.shape[0]), dtype=torch.uint8, device=codes.device)
    for j in range(bits):
        plane = groups if bits == 1 else groups.bitwise_right_shift(j).bitwise_and_(1)
        torch.sum(plane * w, dim=1, dtype=torch.uint8, out=planes[j])
    return planes


def unpack_codes(planes: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``pack_codes``: uint8 codes [n], in torch operations (every device)."""
    shifts = _shifts(planes.device)
    codes = None
    for j in range(planes.shape[0]):
        plane = planes[j].unsqueeze(1).bitwise_right_shift(shifts).bitwise_and_(1)
        codes = plane if codes is None else codes.bitwise_or_(plane.bitwise_left_shift_(j))
    return codes.view(-1)[:n]


def _one_pass(device: torch.device, dtype: torch.dtype, name: str):
    """The one-pass C++ kernel for a floating tensor on the CPU, else None (the torch path)."""
    return optional_op(name) if device.type == "cpu" and dtype in FLOAT_DTYPES else None


def pack_values(values: torch.Tensor, kind: str, levels: int | None = None, norm: float | None = None) -> torch.Tensor:
    """Bit planes of the elements of ``values`` in its logical (row-major) order."""
    if (op := _one_pass(values.device, values.dtype, "pack_spike_values")) is not None:
        return op(values.reshape(-1).contiguous(), kind, levels, norm)
    return pack_codes(encode(values, kind, levels, norm), bits_per_spike(kind, levels))


def unpack_values(planes: torch.Tensor, n: int, dtype: torch.dtype, kind: str,
                  norm: float | None = None) -> torch.Tensor:
    """The n values (1-D, ``dtype``) that ``pack_values`` packed."""
    if (op := _one_pass(planes.device, dtype, "unpack_spike_values")) is not None:
        return op(planes.contiguous(), n, dtype, kind, norm)
    return decode(unpack_codes(planes, n), dtype, kind, norm)


def _register_fakes() -> None:
    """Fake kernels of the C++ ops (torch.compile, opcheck): output shapes from the arguments."""
    if optional_op("pack_spike_values") is None:
        return
    torch.library.register_fake("spikeops::pack_spike_values")(
        lambda values, kind, levels=None, norm=None: values.new_empty(
            (bits_per_spike(*check_kind(kind, levels, norm)[:2]), (values.numel() + 7) // 8), dtype=torch.uint8))
    torch.library.register_fake("spikeops::unpack_spike_values")(
        lambda planes, n, dtype, kind, norm=None: planes.new_empty((n,), dtype=dtype))


_register_fakes()
