"""``python -m spikeops.info``: versions, how spikeops was built, which backends and kernels run here, and why not.

    python -m spikeops.info          # human-readable
    python -m spikeops.info --json   # the same as JSON
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import pkgutil
import platform
import sys
import warnings

import torch

from . import backends

DISPATCH_KEYS = ("CPU", "CUDA")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "?")
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None


def versions() -> dict:
    # The package itself is imported already (running spikeops.info imports it first); it is read, not imported,
    # since nothing inside the package imports its top level (tests/test_layering.py).
    package = sys.modules.get("spikeops")
    return {
        "spikeops": getattr(package, "__version__", None) or _version("spikeops") or "?",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _module_version("triton"),
        "spikingjelly": _version("spikingjelly"),
    }


def build() -> dict:
    info = backends._build_info
    fields = ("EXTENSION", "TORCH_VERSION", "TORCH_CUDA_VERSION", "WITH_CUDA", "NVCC_VERSION", "CUDA_ARCHS",
              "CUDA_SKIPPED", "PYTHON")
    return {
        "install": backends._install_kind(),
        "location": os.path.dirname(os.path.abspath(backends.__file__)),
        "build_info": None if info is None else {f.lower(): getattr(info, f, None) for f in fields},
        "extension_loaded": backends.extension_available(),
        "extension_error": None if backends.extension_available() else backends._missing_extension(),
        "cuda_kernels_compiled": backends.cuda_kernels_compiled(),
        "rebuild": backends.rebuild_command(),
    }


def devices() -> list[dict]:
    out = [{"device": "cpu", "name": platform.processor() or platform.machine()}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            out.append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index),
                        "capability": f"{major}.{minor}"})
    return out


def backend_table() -> dict:
    """{device: {backend: None (runs) or the reason it does not}}."""
    table = {}
    for dev in devices():
        device = torch.device(dev["device"])
        row = {}
        for name in backends.BACKENDS[1:]:
            try:
                row[name] = backends.why_unavailable(name, device)
            except Exception as error:  # noqa: BLE001 - report, do not fail
                row[name] = f"{type(error).__name__}: {error}"
        try:
            with warnings.catch_warnings():  # the fallback warning says what the rows below say
                warnings.simplefilter("ignore")
                row["auto ->"] = backends.resolve("auto", device)
        except Exception as error:  # noqa: BLE001
            row["auto ->"] = f"{type(error).__name__}: {error}"
        table[dev["device"]] = row
    return table


def compiled_kernels() -> dict:
    """{op name: [dispatch keys with a kernel]} for the torch.ops.spikeops operators (C++ and Triton)."""
    has_kernel = getattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", None)
    out = {}
    for name in sorted(dir(torch.ops.spikeops)):
        if name.startswith("_") or name in ("name",):
            continue
        qualified = f"spikeops::{name}"
        try:
            if not torch._C._dispatch_has_kernel(qualified):
                continue
            keys = [k for k in DISPATCH_KEYS if has_kernel is not None and has_kernel(qualified, k)]
            if has_kernel is not None and not keys and has_kernel(qualified, "CompositeExplicitAutograd"):
                keys = ["any device"]
        except Exception:  # noqa: BLE001 - an op without a schema here
            continue
        out[name] = keys
    return out


def triton_kernels() -> dict:
    """{kernel module: None (imports) or the import error}."""
    out = {}
    try:
        package = importlib.import_module("spikeops.kernels")
    except Exception as error:  # noqa: BLE001
        return {"spikeops.kernels": f"{type(error).__name__}: {error}"}
    for module in pkgutil.iter_modules(package.__path__):
        try:
            importlib.import_module(f"spikeops.kernels.{module.name}")
            out[module.name] = None
        except Exception as error:  # noqa: BLE001
            out[module.name] = f"{type(error).__name__}: {error}"
    return out


def collect() -> dict:
    return {"versions": versions(), "build": build(), "devices": devices(), "backends": backend_table(),
            "compiled_ops": compiled_kernels(), "triton_kernels": triton_kernels(),
            "triton_interpreter": backends.triton_interpreted()}


def render(report: dict) -> str:
    lines = ["spikeops " + report["versions"]["spikeops"], "", "versions"]
    for key, value in report["versions"].items():
        if key != "spikeops":
            shown = value if value is not None else ("none (a CPU build of torch)" if key == "torch_cuda" else
                                                     "not installed")
            lines.append(f"  {key:<14} {shown}")
    b = report["build"]
    lines += ["", f"install          {b['install']} ({b['location']})"]
    info = b["build_info"]
    if info is None:
        lines.append("build info       none (no spikeops/_build_info.py: built by an older setup.py, or not built)")
    elif not info["extension"]:
        lines.append("build info       pure-Python install (SPIKEOPS_NO_EXTENSION=1)")
    else:
        cuda = (f"CUDA kernels for {info['cuda_archs']} (nvcc {info['nvcc_version']})" if info["with_cuda"]
                else f"CPU kernels only ({info['cuda_skipped']})")
        torch_cuda = f"CUDA {info['torch_cuda_version']}" if info["torch_cuda_version"] else "a CPU build"
        lines.append(f"build info       built against torch {info['torch_version']} ({torch_cuda}), {cuda}")
    lines.append("extension        " + ("spikeops._C loaded" + (", with CUDA kernels" if b["cuda_kernels_compiled"]
                                                                else ", CPU kernels only")
                                        if b["extension_loaded"] else f"not loaded: {b['extension_error']}"))
    lines += ["", "devices"]
    for dev in report["devices"]:
        extra = f", compute capability {dev['capability']}" if "capability" in dev else ""
        lines.append(f"  {dev['device']:<8} {dev['name']}{extra}")
    if len(report["devices"]) == 1:
        lines.append("  (no CUDA GPU visible to torch)")
    lines += ["", "backends"]
    for device, row in report["backends"].items():
        lines.append(f"  on {device}: auto -> {row['auto ->']}")
        for name, why in row.items():
            if name != "auto ->":
                lines.append(f"    {name:<7} {'yes' if why is None else 'no: ' + why}")
    lines += ["", "compiled operators (torch.ops.spikeops, dispatch keys with a kernel)"]
    ops = report["compiled_ops"]
    if not ops:
        lines.append("  none registered")
    for name, keys in ops.items():
        lines.append(f"  {name:<36} {', '.join(keys) or '-'}")
    lines += ["", "Triton kernel modules (spikeops.kernels)" +
              (" - running under TRITON_INTERPRET=1" if report["triton_interpreter"] else "")]
    for name, error in report["triton_kernels"].items():
        lines.append(f"  {name:<20} {'imports' if error is None else 'no: ' + error}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikeops.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
