"""Plumbing every fused op shares. An op NAME has C++ operators spikeops::NAME_forward / NAME_backward
(CPU and CUDA kernels in spikeops._C) and Python custom ops spikeops::NAME_forward_triton /
NAME_backward_triton with the same schemas, so one fake kernel per direction serves both."""
from __future__ import annotations

import torch

from .. import backends


def register_fakes(name: str, fake_forward, fake_backward) -> None:
    """Fake (meta) kernels for torch.compile / opcheck, on the Triton ops and, when built, the C++ ones."""
    for direction, fake in (("forward", fake_forward), ("backward", fake_backward)):
        torch.library.register_fake(f"spikeops::{name}_{direction}_triton")(fake)
        if backends.extension_available() and hasattr(torch.ops.spikeops, f"{name}_{direction}"):
            torch.library.register_fake(f"spikeops::{name}_{direction}")(fake)


def forward_backward_ops(name: str, backend: str):
    """(forward, backward) operators of op NAME for a resolved backend ("cpu"/"cuda" share the C++ ops)."""
    suffix = "_triton" if backend == "triton" else ""
    if not hasattr(torch.ops.spikeops, f"{name}_forward{suffix}"):
        # An extension built before this op's C++ sources existed (an in-place build not redone).
        raise RuntimeError(f"spikeops: the compiled extension has no {name} kernels; rebuild with `make build`")
    return (getattr(torch.ops.spikeops, f"{name}_forward{suffix}"),
            getattr(torch.ops.spikeops, f"{name}_backward{suffix}"))
