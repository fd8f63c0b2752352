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

def _install_kind() -> str:
    """"checkout" when spikeops runs from its source tree (built in place), else "installed"."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return "checkout" if os.path.isfile(os.path.join(root, "setup.py")) and os.path.isdir(os.path.join(root, "csrc")) \
        else "installed"


def rebuild_command(kind: str | None = None, cuda_arch: str | None = None) -> str:
    """The command that rebuilds spikeops._C for how this spikeops was installed."""
    kind = kind or _install_kind()
    env = f'TORCH_CUDA_ARCH_LIST="{cuda_arch}" ' if cuda_arch else ""
    if kind == "checkout":
        return f"`{env}make build` in the spikeops checkout"
    return (f"`{env}pip install --no-build-isolation --no-cache-dir --force-reinstall --no-deps <spikeops source folder "
            "or sdist>` (torch and a C++ compiler in the environment; nvcc for the CUDA kernels)")


def _base_version(version: str | None) -> str | None:
    return None if version is None else version.split("+")[0]


def build_mismatch(info, torch_version: str = torch.__version__, torch_cuda: str | None = torch.version.cuda) -> str | None:
    """None when the extension described by `info` (spikeops/_build_info.py) fits the running torch, else why not.

    The torch release must be the same (the C++ ABI changes between releases; the local tag such as +cu130 may
    differ); an extension with CUDA kernels also needs a CUDA build of torch of the same CUDA major version."""
    built = getattr(info, "TORCH_VERSION", None)
    if built is None:
        return None
    problem = None
    if _base_version(built) != _base_version(torch_version):
        problem = f"it was built against torch {built}, but torch {torch_version} is installed"
    elif getattr(info, "WITH_CUDA", False):
        built_cuda = getattr(info, "TORCH_CUDA_VERSION", None)
        if torch_cuda is None:
            problem = f"it was built with CUDA kernels against torch {built} (CUDA {built_cuda}), but torch {torch_version} is a CPU build"
        elif built_cuda and built_cuda.split(".")[0] != torch_cuda.split(".")[0]:
            problem = f"it was built against CUDA {built_cuda}, but torch {torch_version} uses CUDA {torch_cuda}"
    return problem


try:
    from . import _build_info
except ImportError:  # a build by an older setup.py, or none at all
    _build_info = None

_C = None
_EXTENSION_ERROR = None
_WARNED_AT_IMPORT = False  # a torch mismatch warns at import; the fallback then does not warn again
if _build_info is not None and not getattr(_build_info, "EXTENSION", True):
    _EXTENSION_ERROR = "spikeops was installed without it (SPIKEOPS_NO_EXTENSION=1)"
elif _build_info is not None and build_mismatch(_build_info):
    _EXTENSION_ERROR = build_mismatch(_build_info)
    warnings.warn(f"spikeops: the compiled extension spikeops._C is not loaded: {_EXTENSION_ERROR}; rebuild it with "
                  f"{rebuild_command()}. Until then "
                  "backend='auto' runs on Triton (GPU) or the pure-PyTorch reference (CPU).", RuntimeWarning,
                  stacklevel=2)
    _WARNED_AT_IMPORT = True
else:
    try:
        from . import _C  # noqa: F401  (registers torch.ops.spikeops.*)
    except ImportError as error:  # pragma: no cover - exercised only on a build without the extension
        _C = None
        _EXTENSION_ERROR = error


def _missing_extension() -> str:
    """Why spikeops._C is not there, and what to do."""
    reason = str(_EXTENSION_ERROR)
    if "SPIKEOPS_NO_EXTENSION" in reason:
        return f"{reason}; reinstall without it to compile the kernels"
    return f"{reason}; build it with {rebuild_command()}"


def extension_available() -> bool:
    return _C is not None


def cuda_kernels_compiled() -> bool:
    return _C is not None and _C.cuda_compiled()


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def triton_available() -> bool:
    return _triton_import_error() is None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _warn_no_extension():
    if _WARNED_AT_IMPORT:
        return
    warnings.warn(
        f"spikeops: the compiled extension spikeops._C is not available ({_missing_extension()}); backend='auto' falls "
        "back to Triton on GPU and to the pure-PyTorch reference on CPU.",
        RuntimeWarning, stacklevel=3,
    )


def parse_arch_list(archs: str) -> list[tuple[int, int, bool]]:
    """TORCH_CUDA_ARCH_LIST syntax ("8.0;9.0+PTX", "8.6 9.0a", "Ampere" is not used) -> [(major, minor, ptx)]."""
    out = []
    for entry in archs.replace(",", ";").replace(" ", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        ptx = entry.upper().endswith("+PTX")
        number = entry[:-4] if ptx else entry
        major, minor = number.split(".")
        out.append((int(major), int(minor.rstrip("afAF")), ptx))
    return out


def arch_runs(archs: str, capability: tuple[int, int]) -> bool:
    """Whether a library built for `archs` has kernels a device of compute `capability` can run: a cubin runs on
    its own major version at an equal or higher minor (sm_80 on sm_86), PTX on any equal or newer device (the
    driver compiles it at load)."""
    for major, minor, ptx in parse_arch_list(archs):
        if (major, minor) <= tuple(capability) and (ptx or major == capability[0]):
            return True
    return False


def compiled_cuda_archs() -> str | None:
    return getattr(_build_info, "CUDA_ARCHS", None)


def _device_capability(index: int) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(index))


@functools.lru_cache(maxsize=None)
def _arch_problem_for(index: int) -> str | None:
    archs = compiled_cuda_archs()
    if archs is None:  # built by an older setup.py: the architectures are unknown, so trust them
        return None
    capability = _device_capability(index)
    if arch_runs(archs, capability):
        return None
    arch = f"{capability[0]}.{capability[1]}"
    return (f"GPU {index} has compute capability {arch} (sm_{capability[0]}{capability[1]}), and spikeops._C carries "
            f"CUDA kernels for {archs} only; rebuild for it with {rebuild_command(cuda_arch=arch)}")


def cuda_arch_problem(device: torch.device) -> str | None:
    """None when the compiled CUDA kernels run on `device`'s GPU, else the capability and the fix (checked once
    per GPU, at its first CUDA call)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _arch_problem_for(index)


@functools.lru_cache(maxsize=None)
def _warn_arch_fallback(problem: str):
    warnings.warn(f"spikeops: backend='auto' does not use the CUDA kernels: {problem}. It runs on Triton meanwhile.",
                  RuntimeWarning, stacklevel=4)


def why_unavailable(backend: str, device: torch.device) -> str | None:
    """None when `backend` can run on `device`, else the reason and the fix."""
    if backend == "torch":
        return None
    if backend == "cpu":
        if _C is None:
            return f"the compiled extension spikeops._C is not available ({_missing_extension()})"
        if device.type != "cpu":
            return f"the 'cpu' backend takes CPU tensors, got a tensor on {device}; use backend='cuda' or 'triton'"
        return None
    if backend == "cuda":
        if _C is None:
            return f"the compiled extension spikeops._C is not available ({_missing_extension()})"
        if not _C.cuda_compiled():
            why = getattr(_build_info, "CUDA_SKIPPED", None) or "torch is a CPU build or nvcc was not found at build time"
            return (f"spikeops._C was built without CUDA kernels ({why}); with a CUDA build of torch and nvcc (CUDA_HOME), "
                    f"rebuild with {rebuild_command()}")
        if device.type != "cuda":
            return f"the 'cuda' backend takes CUDA tensors, got a tensor on {device}"
        return cuda_arch_problem(device)
    if backend == "triton":
        if not triton_available():
            error = _triton_import_error()
            if "No module named 'triton'" in error:
                return "triton is not installed; `pip install triton`"
            return f"triton does not import here ({error})" + (
                "; its CPU interpreter needs numpy: `pip install numpy`" if "numpy" in error else "")
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
                problem = cuda_arch_problem(device)
                if problem is None:
                    return "cuda"
                _warn_arch_fallback(problem)
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
