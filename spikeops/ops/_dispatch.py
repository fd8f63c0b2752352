"""Plumbing every fused op shares. An op NAME has C++ operators spikeops::NAME_forward / NAME_backward
(CPU and CUDA kernels in spikeops._C) and Python custom ops spikeops::NAME_forward_triton /
NAME_backward_triton with the same schemas, so one fake kernel per direction serves both."""
from __future__ import annotations

import torch

from .. import backends


def register_fake(name: str, fake) -> None:
    """Fake (meta) kernel for torch.compile / opcheck of spikeops::NAME_triton and, when built, of the C++
    spikeops::NAME (same schema)."""
    torch.library.register_fake(f"spikeops::{name}_triton")(fake)
    if backends.extension_available() and hasattr(torch.ops.spikeops, name):
        torch.library.register_fake(f"spikeops::{name}")(fake)


def register_fakes(name: str, fake_forward, fake_backward) -> None:
    """register_fake for both directions of op NAME."""
    register_fake(f"{name}_forward", fake_forward)
    register_fake(f"{name}_backward", fake_backward)


def optional_op(name: str):
    """torch.ops.spikeops.NAME, or None where the extension is not built or was built before NAME existed: for
    the C++ kernels that have a torch fallback."""
    return getattr(torch.ops.spikeops, name, None) if backends.extension_available() else None


def compiled_op(name: str, what: str | None = None):
    """torch.ops.spikeops.NAME, or a clear error when the extension was built before NAME's C++ sources
    existed (an in-place build not redone)."""
    if not hasattr(torch.ops.spikeops, name):
        raise RuntimeError(f"spikeops: the compiled extension has no {what or name} kernels; rebuild with "
                           "`make build`")
    return getattr(torch.ops.spikeops, name)


def forward_backward_ops(name: str, backend: str):
    """(forward, backward) operators of op NAME for a resolved backend ("cpu"/"cuda" share the C++ ops)."""
    suffix = "_triton" if backend == "triton" else ""
    return compiled_op(f"{name}_forward{suffix}", name), compiled_op(f"{name}_backward{suffix}", name)
