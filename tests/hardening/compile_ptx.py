"""Ahead-of-time PTX for the 64-bit index check, without a GPU.

Triton: ``python -m hardening.compile_ptx`` (with tests/ on the path) reads launch specs (JSON on stdin) recorded from the
interpreter and compiles each with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``.
It must run in a process without TRITON_INTERPRET=1 (under the interpreter ``@triton.jit`` yields
interpreter objects that cannot be compiled), hence a subprocess. CUDA: ``nvcc --ptx`` on a .cu file
with torch's include paths. Both cache by content hash under build/hardening-ptx/.
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "build", "hardening-ptx")
TARGET = ("cuda", 90, 32)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------ Triton
def spec_key(spec: dict) -> str:
    """Cache key: the kernel's module source (its helpers live beside it) and the specialisation."""
    module = importlib.import_module(spec["module"])
    sources = [inspect.getsource(module)]
    for path in sorted(glob.glob(os.path.join(os.path.dirname(module.__file__), "*.py"))):
        with open(path) as handle:
            sources.append(handle.read())
    return _digest(json.dumps(spec, sort_keys=True), *sources)


def compile_triton(specs: list[dict]) -> list[str]:
    """PTX of each spec, compiled in a fresh interpreter-free process (cached)."""
    os.makedirs(CACHE, exist_ok=True)
    paths = [os.path.join(CACHE, f"triton-{spec['name']}-{spec_key(spec)}.ptx") for spec in specs]
    todo = [(spec, path) for spec, path in zip(specs, paths) if not os.path.exists(path)]
    if todo:
        # Kernels are imported by the module names this test session gave them (spikeops.kernels.*,
        # hardening.*), so the child sees the repository root and tests/ the way pytest does.
        path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=path)
        payload = json.dumps([dict(spec, out=path) for spec, path in todo])
        done = subprocess.run([sys.executable, "-m", "hardening.compile_ptx"], input=payload, text=True,
                              cwd=ROOT, env=env, capture_output=True)
        if done.returncode:
            raise RuntimeError(f"Triton AOT compile failed:\n{done.stderr[-4000:]}")
    ptx = []
    for path in paths:
        with open(path) as handle:
            ptx.append(handle.read())
    return ptx


def _compile_one(spec: dict) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(spec["module"]), spec["name"])
    names = kernel.arg_names
    constexprs = {(names.index(k),): v for k, v in spec["constexprs"].items()}
    signature = {name: spec["signature"].get(name, "constexpr") for name in names}
    # JSON carries a tuple argument's element types as a list; Triton takes a tuple.
    signature = {name: tuple(ty) if isinstance(ty, list) else ty for name, ty in signature.items()}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget(*TARGET), options=spec["options"])
    return compiled.asm["ptx"]


def main() -> None:
    for spec in json.load(sys.stdin):
        ptx = _compile_one(spec)
        with open(spec["out"] + ".tmp", "w") as handle:
            handle.write(ptx)
        os.replace(spec["out"] + ".tmp", spec["out"])


# ------------------------------------------------------------------------------------------ CUDA
def nvcc_path() -> str | None:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = os.path.join(home, "bin", "nvcc")
    return candidate if os.path.exists(candidate) else shutil.which("nvcc")


def compile_cuda(path: str) -> str:
    """PTX (sm_90) of one csrc/<op>/*.cu file, with the flags setup.py uses (include dir csrc/; cached by
    source and every header under csrc/)."""
    import torch.utils.cpp_extension as cpp_extension

    nvcc = nvcc_path()
    headers = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True))
    sources = []
    for name in [path, *headers]:
        with open(name) as handle:
            sources.append(handle.read())
    out = os.path.join(CACHE, f"cuda-{os.path.basename(path)}-{_digest(nvcc, *sources)}.ptx")
    if os.path.exists(out):
        with open(out) as handle:
            return handle.read()
    os.makedirs(CACHE, exist_ok=True)
    site = sysconfig.get_paths()["purelib"]
    includes = [os.path.join(ROOT, "csrc"), *cpp_extension.include_paths("cuda"),
                *sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))]
    command = [nvcc, "--ptx", "-O3", "-std=c++20", "--fmad=false", "-arch=sm_90", "-DSPIKEOPS_WITH_CUDA",
               "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
               "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
               *[f"-I{d}" for d in includes], "-o", out + ".tmp", path]
    subprocess.run(command, check=True, capture_output=True, text=True)
    os.replace(out + ".tmp", out)
    with open(out) as handle:
        return handle.read()


def compile_cuda_source(code: str) -> str:
    """PTX of a standalone CUDA snippet (the negative controls of the checker)."""
    os.makedirs(CACHE, exist_ok=True)
    base = os.path.join(CACHE, f"snippet-{_digest(code)}")
    if not os.path.exists(base + ".ptx"):
        with open(base + ".cu", "w") as handle:
            handle.write(code)
        subprocess.run([nvcc_path(), "--ptx", "-O3", "-arch=sm_90", "-o", base + ".ptx", base + ".cu"],
                       check=True, capture_output=True, text=True)
    with open(base + ".ptx") as handle:
        return handle.read()


if __name__ == "__main__":
    main()
