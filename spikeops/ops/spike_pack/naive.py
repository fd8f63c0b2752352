"""Element-by-element reference of the bit packing (``bits.py``): plain Python integers, one element at a
time, written from the format's definition. The oracle the vectorised packing is tested against; slow, for
small tensors only."""
from __future__ import annotations

import torch

from .bits import bits_per_spike, check_kind

__all__ = ["pack", "unpack"]


def _code(value: float, kind: str, norm: float | None) -> int:
    if kind == "binary":
        code = int(value)
    elif kind == "ternary":
        code = int(value) + 1
    else:
        code = int(round(value * norm)) if norm is not None else int(value)
    return code


def pack(values: torch.Tensor, kind: str, levels: int | None = None, norm: float | None = None) -> torch.Tensor:
    """uint8 [bits, ⌈n / 8⌉]: bit j of the code of element i (row-major order) is bit i % 8 of byte
    ``[j, i // 8]``."""
    kind, levels, norm = check_kind(kind, levels, norm)
    bits = bits_per_spike(kind, levels)
    flat = values.detach().reshape(-1).double().tolist()
    nbytes = (len(flat) + 7) // 8
    planes = [[0] * nbytes for _ in range(bits)]
    for i, value in enumerate(flat):
        code = _code(value, kind, norm)
        if not 0 <= code < (1 << bits):
            raise ValueError(f"values: element {i} = {value} is not a {kind} spike")
        for j in range(bits):
            if (code >> j) & 1:
                planes[j][i // 8] |= 1 << (i % 8)
    return torch.tensor(planes, dtype=torch.uint8).reshape(bits, nbytes)


def unpack(planes: torch.Tensor, shape, dtype: torch.dtype, kind: str, levels: int | None = None,
           norm: float | None = None) -> torch.Tensor:
    """The tensor of ``shape`` and ``dtype`` that ``pack`` packed (contiguous, on the CPU)."""
    kind, levels, norm = check_kind(kind, levels, norm)
    rows = planes.tolist()
    n = 1
    for size in shape:
        n *= size
    out = []
    for i in range(n):
        code = 0
        for j, row in enumerate(rows):
            code |= ((row[i // 8] >> (i % 8)) & 1) << j
        value = code - 1 if kind == "ternary" else code
        # the value in dtype, by the neurons' own arithmetic (integer / norm computed in dtype)
        v = torch.tensor(value, dtype=dtype)
        out.append(v / norm if norm is not None else v)
    return torch.stack(out).reshape(shape) if out else torch.empty(shape, dtype=dtype)
