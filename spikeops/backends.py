"""Which backends exist here, and the choice of one per call.

"torch" is the pure-PyTorch reference, "cpu" the fused C++ kernels, "cuda" the CUDA C++ kernels,
"triton" the Triton kernels (on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1), and
"auto" the fastest available for the tensor's device.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

BACKENDS = ("auto", "torch", "cpu", "cuda", "triton")

try:
    from . import _C  # noqa: F401  (registers torch.ops.spikeops.*)
    _EXTENSION_ERROR = None
except ImportError as error:  # pragma: no cover - exercised only on a build without the extension
    _C = None
    _EXTENSION_ERROR = error


def extension_available() -> bool:
    return _C is not None


def cuda_kernels_compiled() -> bool:
    return _C is not None and _C.cuda_compiled()


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _warn_no_extension():
    warnings.warn(
        f"spikeops: the compiled extension spikeops._C is missing ({_EXTENSION_ERROR}); backend='auto' falls back "
        "to Triton on GPU and to the pure-PyTorch reference on CPU. Rebuild with `make build`.",
        RuntimeWarning, stacklevel=3,
    )


def why_unavailable(backend: str, device: torch.device) -> str | None:
    """None when `backend` can run on `device`, else the reason and the fix."""
    if backend == "torch":
        return None
    if backend == "cpu":
        if _C is None:
            return f"the compiled extension spikeops._C failed to import ({_EXTENSION_ERROR}); run `make build`"
        if device.type != "cpu":
            return f"the 'cpu' backend takes CPU tensors, got a tensor on {device}; use backend='cuda' or 'triton'"
        return None
    if backend == "cuda":
        if _C is None:
            return f"the compiled extension spikeops._C failed to import ({_EXTENSION_ERROR}); run `make build`"
        if not _C.cuda_compiled():
            return ("spikeops._C was built without CUDA kernels (torch is a CPU build or nvcc was not found at build "
                    "time); install a CUDA build of torch, set CUDA_HOME and rebuild")
        if device.type != "cuda":
            return f"the 'cuda' backend takes CUDA tensors, got a tensor on {device}"
        return None
    if backend == "triton":
        if not triton_available():
            return "triton is not installed; `pip install triton`"
        if device.type == "cpu" and not triton_interpreted():
            return "Triton runs on CPU tensors only under the interpreter: set TRITON_INTERPRET=1 before importing triton"
        if device.type not in ("cpu", "cuda"):
            return f"the 'triton' backend takes CUDA tensors, got a tensor on {device}"
        return None
    raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def resolve(backend: str, device: torch.device) -> str:
    """The concrete backend for a tensor on `device`; raises with the reason when it cannot run."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda":
            if cuda_kernels_compiled():
                return "cuda"
            if _C is None:
                _warn_no_extension()
            return "triton" if triton_available() else "torch"
        if _C is None:
            _warn_no_extension()
            return "torch"
        return "cpu"
    reason = why_unavailable(backend, device)
    if reason is not None:
        raise RuntimeError(f"spikeops: backend={backend!r} is unavailable: {reason}")
    return backend


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    device = torch.device(device)
    return [b for b in BACKENDS[1:] if why_unavailable(b, device) is None]
