"""Static GPU analysis, no GPU needed: what each kernel would move through memory on an H100.

Triton: every kernel that a `kernels/<op>.py` module lists in `aot_specs()` is compiled ahead of
time for sm_80 and sm_90 (`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`),
with `tt.divisibility=16` on pointers and on `N`, as the JIT specialises aligned tensors. ptxas -v
(the one shipped with Triton; sm_90 PTX targets sm_90a) gives registers and spills; the PTX gives
the global loads/stores inside the time loop and their vector width.

CUDA: the cubins of the built extension (spikeops/_C*.so, compiled by nvcc for sm_80 and sm_90 with
setup.py's flags) are read with cuobjdump (registers, stack/local bytes, SASS). When the extension
is missing, holds no cubins or is older than a file under csrc/, every csrc/<op>/*.cu is compiled
instead with `nvcc -cubin -Xptxas -v` and setup.py's flags (include dir csrc/, cached under
build/static_gpu/).

Bytes per neuron-step = bytes one thread moves per loop iteration / time steps per iteration / neurons
per thread, summed over the kernel's time loops. By default each innermost loop is one step. A kernel
whose aot spec declares `time_loops` (one entry per nesting depth, outermost first) is counted loop by
loop, each loop's own body without the loops nested in it: `steps` is how many time steps an iteration
moves (an unrolled chunk of tl.static_range steps), and a loop marked `only_when` (the neuron backward's
recompute of a chunk's starting membrane, which runs only when T exceeds the chunk) is reported apart,
as bytes per step it takes, not in the headline figure. A PTX loop structure other than the declared one
is an error. A spec with `steps_without_loop` (T a constexpr, no loop left) counts all its accesses as
that many steps. Ideal time per 1e9 neuron-steps is that many bytes at the H100 SXM bandwidth of
3.35 TB/s.

Run: `python -m benchmarks.static_gpu [--json PATH]` (prints a Markdown section).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
H100_BYTES_PER_S = 3.35e12
ARCHS = (80, 90)
CACHE = REPO / "build" / "static_gpu"


def ideal_ms_per_1e9(bytes_per_neuron_step: float) -> float:
    return bytes_per_neuron_step * 1e9 / H100_BYTES_PER_S * 1e3


# ---------------------------------------------------------------- reference layouts (same arithmetic)
def layout_models() -> list[dict]:
    """Bytes per neuron-step of a LIF forward+backward under fixed storage layouts, each tensor read
    or written once per step. d = bytes of the input dtype."""
    rows = []
    # Ideal: bf16 x in, 1-bit spikes out, backward recomputes H (and the spikes) from x.
    rows.append(dict(layout="ideal: bf16 x, 1-bit spikes, recompute", dtype="bf16",
                     forward=2 + 1 / 8, backward=2 + 2 + 2,
                     detail="fwd: read x, write spike bits; bwd: read x, grad_spikes, write grad_x"))
    for dtype, d in (("fp32", 4), ("bf16", 2)):
        # spikingjelly/_ops/lif/triton.py: spikes in x's dtype, H ("charged") saved in float32.
        rows.append(dict(layout="SpikingJelly 2.0 Triton LIF (H saved in fp32)", dtype=dtype,
                         forward=d + d + 4, backward=4 + d + d,
                         detail="fwd: read x, write spike, write H; bwd: read H, grad_spikes, write grad_x"))
        rows.append(dict(layout="x, spike and H all in the input dtype", dtype=dtype,
                         forward=3 * d, backward=3 * d,
                         detail="fwd: read x, write spike, write H; bwd: read H, grad_spikes, write grad_x"))
    for row in rows:
        row["total"] = row["forward"] + row["backward"]
        row["ideal_ms_per_1e9"] = ideal_ms_per_1e9(row["total"])
    return rows


# ---------------------------------------------------------------- assembly analysis
_PTX_MEM = re.compile(r"\b(ld|st|atom|red)\.global((?:\.[a-z0-9]+)*)")
_PTX_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
_PTX_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")
_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
_SASS_MEM = re.compile(r"\b(LDG|STG|ATOMG|RED)((?:\.[A-Z0-9]+)*)")
_SASS_BRANCH = re.compile(r"\bBRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))")


def _ptx_access(line: str):
    """(kind 'ld'/'st', bytes per thread, vector lanes) of a PTX global access, or None."""
    m = _PTX_MEM.search(line)
    if not m:
        return None
    mods = m.group(2).split(".")[1:]
    lanes = next((int(x[1:]) for x in mods if re.fullmatch(r"v\d", x)), 1)
    bits = next((int(re.sub(r"\D", "", x)) for x in reversed(mods) if re.fullmatch(r"[bsuf]\d+", x)), 32)
    kind = "ld" if m.group(1) == "ld" else "st"
    return kind, lanes * bits // 8, lanes


def _sass_access(line: str):
    m = _SASS_MEM.search(line)
    if not m:
        return None
    mods = m.group(2).split(".")[1:]
    size = 4
    for mod in mods:
        if mod in ("128", "64"):
            size = int(mod) // 8
        elif mod in ("U8", "S8"):
            size = 1
        elif mod in ("U16", "S16"):
            size = 2
    kind = "ld" if m.group(1) == "LDG" else "st"
    return kind, size, max(size // 4, 1)


def _loop_ranges(edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Loop ranges (header, last back-edge) from back-edges, merged per header, in code order (an
    enclosing loop before the loops nested in it)."""
    ranges = {}
    for head, tail in edges:
        ranges[head] = max(ranges.get(head, tail), tail)
    return sorted(ranges.items())


def _inside(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
    return inner != outer and outer[0] <= inner[0] and inner[1] <= outer[1]


def _innermost_loops(edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    loops = _loop_ranges(edges)
    return [loop for loop in loops if not any(_inside(other, loop) for other in loops)]


def _unroll_factor(seq: list) -> int:
    """k when the loop body's access sequence is k copies of one iteration (the compiler unrolled it)."""
    n = len(seq)
    for period in range(1, n + 1):
        if n % period == 0 and seq == seq[:period] * (n // period):
            return n // period
    return 1


def _loop_report(accesses: list[tuple[int, tuple]], loops: list[tuple[int, int]]) -> list[dict]:
    out = []
    for head, tail in loops:
        seq = [a for pos, a in accesses if head <= pos <= tail]
        if not seq:
            continue
        k = _unroll_factor(seq)
        one = seq[: len(seq) // k]
        out.append(dict(
            unrolled=k,
            loads=[size for kind, size, _ in one if kind == "ld"],
            stores=[size for kind, size, _ in one if kind == "st"],
            bytes_per_thread=sum(size for _, size, _ in one),
        ))
    return out


def _loop_nest(accesses: list[tuple[int, tuple]], edges: list[tuple[int, int]]) -> list[dict]:
    """Every loop, enclosing ones first, with the accesses of its own body (those of the loops nested in
    it left out) per iteration as written, and its depth (0: not inside another loop). No unroll
    detection: a loop that steps through time several steps an iteration (tl.static_range) says so in
    its aot spec, and a per-step body of two 16-byte accesses would otherwise read as two iterations."""
    loops = _loop_ranges(edges)
    out = []
    for loop in loops:
        nested = [other for other in loops if _inside(other, loop)]
        own = [a for pos, a in accesses
               if loop[0] <= pos <= loop[1] and not any(h <= pos <= t for h, t in nested)]
        out.append(dict(
            depth=sum(_inside(loop, other) for other in loops),
            loads=[size for kind, size, _ in own if kind == "ld"],
            stores=[size for kind, size, _ in own if kind == "st"],
            bytes_per_thread=sum(size for _, size, _ in own),
        ))
    return out


def analyse_ptx(ptx: str) -> dict:
    lines = ptx.splitlines()
    labels = {}
    accesses, edges = [], []
    for i, line in enumerate(lines):
        m = _PTX_LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = i
        access = _ptx_access(line)
        if access:
            accesses.append((i, access))
    for i, line in enumerate(lines):
        m = _PTX_BRANCH.search(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            edges.append((labels[m.group(1)], i))
    return dict(loops=_loop_report(accesses, _innermost_loops(edges)), nest=_loop_nest(accesses, edges),
                all_accesses=[a for _, a in accesses])


def analyse_sass(lines: list[str]) -> dict:
    accesses, edges = [], []
    for line in lines:
        m = _SASS_LINE.search(line)
        if not m:
            continue
        addr, text = int(m.group(1), 16), m.group(2)
        access = _sass_access(text)
        if access:
            accesses.append((addr, access))
        b = _SASS_BRANCH.search(text)
        if b and b.group(1) and int(b.group(1), 16) <= addr:
            edges.append((int(b.group(1), 16), addr))
    return dict(loops=_loop_report(accesses, _innermost_loops(edges)), all_accesses=[a for _, a in accesses])


# ---------------------------------------------------------------- tools
def triton_tool(name: str) -> str | None:
    try:
        import triton
    except ImportError:
        return None
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else shutil.which(name)


def nvcc_path() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


_PTXAS_FUNC = re.compile(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?")
_PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas(log: str) -> dict:
    """{function: {registers, stack_bytes, spill_store_bytes, spill_load_bytes}} from ptxas -v."""
    result, current = {}, None
    for line in log.splitlines():
        m = _PTXAS_FUNC.search(line)
        if m:
            current = result.setdefault(m.group(1), {})
        elif current is not None and (m := _PTXAS_SPILL.search(line)):
            current.update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                           spill_load_bytes=int(m.group(3)))
        elif current is not None and (m := _PTXAS_REGS.search(line)):
            current["registers"] = int(m.group(1))
    return result


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = _run([tool], input="\n".join(names)).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def _short_cuda_name(demangled: str) -> str:
    """`spikeops::(anon)::forward_kernel<c10::BFloat16, 8>(...)` -> `forward_kernel<BFloat16, 8>`."""
    name = demangled.replace("(anonymous namespace)::", "").replace("c10::", "")
    name = re.sub(r"^void ", "", name)
    depth, end = 0, len(name)
    for i, ch in enumerate(name):  # cut the parameter list: the first '(' outside template brackets
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            end = i
            break
    name = name[:end]
    name = re.sub(r", std::conditional<.*$", ">", name)
    return name.split("::")[-1] if "<" not in name else re.sub(r"^[\w:]*::(?=\w+<)", "", name)


# ---------------------------------------------------------------- Triton
def discover_triton_specs() -> list[tuple[str, dict]]:
    """(module name, spec) for every kernels/<op>.py module that defines aot_specs()."""
    import spikeops.kernels as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"spikeops.kernels.{info.name}")
        if callable(getattr(module, "aot_specs", None)):
            found.extend((info.name, spec) for spec in module.aot_specs())
    return found


def _aligned_attrs(kernel, signature: dict, aligned: list[str]) -> dict:
    names = list(kernel.arg_names)
    return {(names.index(arg),): [["tt.divisibility", 16]]
            for arg, ty in signature.items() if (isinstance(ty, str) and ty.startswith("*")) or arg in aligned}


def compile_triton(spec: dict, arch: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = spec["kernel"]
    signature = dict(spec["signature"])
    constexprs = dict(spec.get("constexprs", {}))
    for name in constexprs:
        signature.setdefault(name, "constexpr")
    aligned = spec.get("aligned_args", ["N"])
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs,
                       attrs=_aligned_attrs(kernel, signature, aligned))
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": spec.get("num_warps", 4), "enable_fp_fusion": False,
                                       **({"num_stages": spec["num_stages"]} if "num_stages" in spec else {}),
                                       **spec.get("options", {})})
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        Path(path).write_text(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        log = _run([triton_tool("ptxas"), "-v", f"-arch={gpu}", path, "-o", os.devnull])
    if log.returncode != 0:
        raise RuntimeError(f"ptxas failed on {spec['name']} sm_{arch}: {log.stderr[-2000:]}")
    resources = parse_ptxas(log.stderr + log.stdout)
    resource = resources.get(compiled.metadata.name) or next(iter(resources.values()), {})
    threads = spec.get("num_warps", 4) * 32
    per_program = spec.get("elements_per_program", constexprs.get("BLOCK"))
    return dict(ptx=ptx, resource=resource, threads=threads,
                elements_per_thread=(per_program / threads) if per_program else None)


def triton_rows(specs, archs=ARCHS, progress=None) -> list[dict]:
    rows = []
    for module, spec in specs:
        for arch in archs:
            if progress:
                progress(f"triton {spec['name']} sm_{arch}")
            compiled = compile_triton(spec, arch)
            rows.append(_row("triton", module, spec["name"], arch, compiled["resource"],
                             analyse_ptx(compiled["ptx"]), compiled["elements_per_thread"], spec))
    return rows


# ---------------------------------------------------------------- CUDA
def _extension_path() -> Path | None:
    found = sorted(glob.glob(str(REPO / "spikeops" / "_C*.so")))
    return Path(found[0]) if found else None


def _csrc_files() -> list[Path]:
    """Every CUDA source and header under csrc/ (csrc/<op>/ and csrc/common/)."""
    return sorted(p for p in (REPO / "csrc").rglob("*") if p.suffix in (".cu", ".cuh", ".h"))


def extension_is_current(so: Path | None) -> bool:
    return so is not None and all(p.stat().st_mtime <= so.stat().st_mtime for p in _csrc_files())


_RES_FUNC = re.compile(r"^\s*Function (\S+):")
_RES_VALUES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)")


def _cuobjdump_resources(binary: str, arch: int) -> dict:
    out = _run([triton_tool("cuobjdump"), "-res-usage", "-arch", f"sm_{arch}", binary]).stdout
    result, current = {}, None
    for line in out.splitlines():
        m = _RES_FUNC.match(line)
        if m:
            current = m.group(1)
        elif current and (m := _RES_VALUES.search(line)):
            # No spill counters here: a kernel without local arrays uses stack/local memory only to spill.
            result[current] = dict(registers=int(m.group(1)), stack_bytes=int(m.group(2)),
                                   spill_store_bytes=int(m.group(3)), spill_load_bytes=0)
            current = None
    return result


def _cuobjdump_sass(binary: str, arch: int) -> dict[str, list[str]]:
    out = _run([triton_tool("cuobjdump"), "-sass", "-arch", f"sm_{arch}", binary]).stdout
    functions, current = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = functions.setdefault(m.group(1), [])
        elif current is not None:
            current.append(line)
    return functions


def _nvcc_flags(arch: int) -> list[str]:
    from torch.utils import cpp_extension

    site = sysconfig.get_paths()["purelib"]
    includes = [str(REPO / "csrc"), *cpp_extension.include_paths(device_type="cuda"),
                *sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include"))),
                sysconfig.get_paths()["include"]]
    return [f"-arch=sm_{arch}", "-O3", "-std=c++20", "--fmad=false", "-DSPIKEOPS_WITH_CUDA",
            "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", "-D_GLIBCXX_USE_CXX11_ABI=1",
            *[f"-I{d}" for d in includes]]


def nvcc_cubin(source: Path, arch: int) -> tuple[str, dict]:
    """(cubin path, ptxas resources) of one .cu, cached by the hash of csrc/ and the flags."""
    flags = _nvcc_flags(arch)
    digest = hashlib.sha256(" ".join(flags).encode())
    for path in _csrc_files():
        digest.update(path.read_bytes())
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"{source.stem}.sm_{arch}.{digest.hexdigest()[:16]}"
    # Not with_suffix: the digest after the last dot would be taken for a suffix and replaced, and the
    # cache would then never see a change under csrc/.
    cubin, log = stem.parent / f"{stem.name}.cubin", stem.parent / f"{stem.name}.ptxas.log"
    if not cubin.exists():
        done = _run([nvcc_path(), "-cubin", "-Xptxas", "-v", *flags, str(source), "-o", str(cubin)])
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed on {source.name} sm_{arch}: {done.stderr[-3000:]}")
        log.write_text(done.stderr + done.stdout)
    return str(cubin), parse_ptxas(log.read_text())


def _source_unit(mangled: str, default: str) -> str:
    """The .cu file of a kernel in an anonymous namespace, which nvcc mangles as `..._<len>_<file>_cu_<hash>`."""
    m = re.search(r"_GLOBAL__N__[0-9a-f]+_\d+_(\w+?)_cu_[0-9a-f]+", mangled)
    return f"{m.group(1)}.cu" if m else default


def _vector_width(name: str) -> int:
    """Neurons per thread of a templated CUDA kernel: its last integer template argument (VEC)."""
    m = re.findall(r"Li(\d+)E", name)
    return int(m[-1]) if m else 1


def cuda_rows(archs=ARCHS, source: str = "auto", progress=None) -> tuple[list[dict], str]:
    """(rows, how the cubins were obtained)."""
    so = _extension_path()
    from_extension = False
    if so is not None and (source == "extension" or (source == "auto" and extension_is_current(so))):
        elves = _run([triton_tool("cuobjdump"), "-lelf", str(so)]).stdout
        from_extension = all(f"sm_{a}" in elves for a in archs)
    if from_extension:
        origin = f"cubins inside the built extension {so.name}, read with cuobjdump"
    elif nvcc_path() is None:
        return [], "not analysed: the extension has no current cubins and nvcc is not installed"
    else:
        origin = "nvcc -cubin -Xptxas -v per csrc/<op>/*.cu, cached in build/static_gpu/"
    rows = []
    for arch in archs:
        if from_extension:
            units = [(so.name, str(so), _cuobjdump_resources(str(so), arch))]
        else:
            units = []
            for cu in sorted((REPO / "csrc").rglob("*.cu")):
                if progress:
                    progress(f"nvcc {cu.name} sm_{arch}")
                cubin, resources = nvcc_cubin(cu, arch)
                units.append((cu.name, cubin, resources))
        for unit, binary, resources in units:
            sass = _cuobjdump_sass(binary, arch)
            names = demangle(list(sass))
            for mangled, lines in sass.items():
                short = _short_cuda_name(names[mangled])
                rows.append(_row("cuda", _source_unit(mangled, unit), short, arch, resources.get(mangled, {}), analyse_sass(lines),
                                 _vector_width(mangled)))
    return rows, origin


# ---------------------------------------------------------------- rows
def _declared_time_loops(name: str, analysis: dict, spec: dict) -> list[dict]:
    """The PTX loops of a kernel whose aot spec describes its time loops, each with the spec's `steps`
    (time steps an iteration moves) and `only_when` (a loop that runs only for some T, counted apart).
    `time_loops` lists them by nesting depth, outermost first; `steps_without_loop` is a kernel that
    takes a fixed number of steps in straight-line code (T a constexpr), counted as one iteration."""
    nest = analysis["nest"]
    if not nest and "steps_without_loop" in spec:
        accesses = analysis["all_accesses"]
        return [dict(depth=0, steps=spec["steps_without_loop"], only_when=None, no_loop=True,
                     loads=[size for kind, size, _ in accesses if kind == "ld"],
                     stores=[size for kind, size, _ in accesses if kind == "st"],
                     bytes_per_thread=sum(size for _, size, _ in accesses))]
    declared = spec.get("time_loops", ())
    if [loop["depth"] for loop in nest] != list(range(len(declared))):
        # Counting a loop the spec does not describe (a remainder loop after unrolling, say) would
        # silently misstate the bytes: the spec and the kernel must be brought back in line.
        raise RuntimeError(f"{name}: the PTX has loops at depths {[loop['depth'] for loop in nest]}, its aot spec "
                           f"declares {len(declared)} nested time loops")
    return [dict(loop, steps=d["steps"], only_when=d.get("only_when")) for loop, d in zip(nest, declared)]


def _row(source, unit, name, arch, resource, analysis, elements_per_thread, spec=None) -> dict:
    declared = spec is not None and ("time_loops" in spec or "steps_without_loop" in spec)
    loops = _declared_time_loops(name, analysis, spec) if declared else analysis["loops"]
    per_loop = [loop["bytes_per_thread"] / loop.get("steps", 1) / elements_per_thread for loop in loops
                if not loop.get("only_when")] if elements_per_thread else []
    row = dict(source=source, unit=unit, kernel=name, arch=arch,
               registers=resource.get("registers"), stack_bytes=resource.get("stack_bytes"),
               spill_bytes=(None if "spill_store_bytes" not in resource
                            else resource["spill_store_bytes"] + resource["spill_load_bytes"]),
               elements_per_thread=elements_per_thread, loops=loops,
               load_widths=sorted({size for kind, size, _ in analysis["all_accesses"] if kind == "ld"}),
               store_widths=sorted({size for kind, size, _ in analysis["all_accesses"] if kind == "st"}))
    if source == "triton":
        # constexpr flags are resolved: the loops are the kernel's sequential time sweeps.
        row["bytes_per_neuron_step"] = sum(per_loop) if per_loop else None
    else:
        # Runtime flags: the compiler clones the time loop per path, so each loop is one alternative.
        row["bytes_per_neuron_step_range"] = (min(per_loop), max(per_loop)) if per_loop else None
        row["bytes_per_neuron_step"] = None
    if row["bytes_per_neuron_step"] is not None:
        row["ideal_ms_per_1e9"] = ideal_ms_per_1e9(row["bytes_per_neuron_step"])
    if elements_per_thread:
        # Bytes per neuron-step that a conditional loop (e.g. a recompute for long T) moves per step it takes.
        row["conditional_bytes_per_step"] = {
            loop["only_when"]: loop["bytes_per_thread"] / loop["steps"] / elements_per_thread
            for loop in loops if loop.get("only_when")}
    return row


def measured_layouts(triton: list[dict], arch: int) -> list[dict]:
    """spikeops' Triton LIF forward + backward, from the PTX rows, in the layout table's terms."""
    by_name = {row["kernel"]: row for row in triton if row["arch"] == arch}
    rows = []
    for dtype in ("fp32", "bf16"):
        forward, backward = by_name.get(f"neuron_forward lif {dtype}"), by_name.get(f"neuron_backward lif {dtype}")
        if not forward or not backward or None in (forward["bytes_per_neuron_step"], backward["bytes_per_neuron_step"]):
            continue
        total = forward["bytes_per_neuron_step"] + backward["bytes_per_neuron_step"]
        rows.append(dict(layout=f"spikeops Triton LIF, from the sm_{arch} PTX", dtype=dtype,
                         forward=forward["bytes_per_neuron_step"], backward=backward["bytes_per_neuron_step"],
                         total=total, ideal_ms_per_1e9=ideal_ms_per_1e9(total),
                         detail="fwd: read x, write spike; bwd (T up to its register chunk): read x, grad_spikes, "
                                "write grad_x (H and spikes recomputed in registers); longer T re-reads x "
                                "to rebuild each chunk's starting membrane"))
    return rows


def analyse(archs=ARCHS, cuda_source: str = "auto", progress=None) -> dict:
    result = dict(bandwidth_bytes_per_s=H100_BYTES_PER_S, archs=list(archs), layouts=layout_models())
    if triton_tool("ptxas") is None:
        result["triton"], result["triton_note"] = [], "not analysed: triton (with its ptxas) is not installed"
    else:
        result["triton"] = triton_rows(discover_triton_specs(), archs, progress)
        result["layouts"] += measured_layouts(result["triton"], max(archs))
    if triton_tool("cuobjdump") is None:
        result["cuda"], result["cuda_note"] = [], "not analysed: cuobjdump not found"
    else:
        result["cuda"], result["cuda_note"] = cuda_rows(archs, cuda_source, progress)
    return result


# ---------------------------------------------------------------- Markdown
def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _sizes_text(sizes) -> str:
    """[16, 16, 8] -> '2×16B+8B'."""
    runs = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return "+".join(f"{count}×{size}B" if count > 1 else f"{size}B" for size, count in runs) or "0"


def _loop_text(loops) -> str:
    parts = []
    for loop in loops:
        ld, st = _sizes_text(loop["loads"]), _sizes_text(loop["stores"])
        notes = []
        if loop.get("unrolled", 1) > 1:
            notes.append(f"×{loop['unrolled']} unrolled")
        if loop.get("no_loop"):
            notes.append(f"no loop: T = {loop['steps']}")
        elif loop.get("steps", 1) > 1:
            notes.append(f"{loop['steps']} steps an iteration")
        if loop.get("only_when"):
            notes.append(f"only when {loop['only_when']}, not in B/neuron-step")
        parts.append(f"ld {ld} / st {st}" + (f" ({', '.join(notes)})" if notes else ""))
    return "; ".join(parts) or "no loop"


def _conditional_text(row) -> str:
    return "".join(f" (+{value:.3f} a recomputed step when {when})"
                   for when, value in row.get("conditional_bytes_per_step", {}).items())


def markdown(result: dict) -> str:
    bw = result["bandwidth_bytes_per_s"] / 1e12
    out = ["## Static GPU analysis (no GPU needed)", "",
           f"Ideal time = bytes per neuron-step at H100 bandwidth ({bw:.2f} TB/s), for 10⁹ neuron-steps. "
           "Per-thread accesses per time-loop iteration come from the PTX (Triton) or SASS (CUDA); "
           "`16B` is a 128-bit vector access. Spill bytes are spill stores + loads reported by ptxas "
           "(for cubins read from the extension: local-memory bytes, which only spills use here).", "",
           "### Reference layouts (LIF forward + backward)", "",
           "| layout | dtype | fwd B/neuron-step | bwd B/neuron-step | total | ideal ms / 10⁹ | accesses |",
           "|---|---|---|---|---|---|---|"]
    for row in result["layouts"]:
        out.append(f"| {row['layout']} | {row['dtype']} | {row['forward']:.3f} | {row['backward']:.3f} | "
                   f"{row['total']:.3f} | {row['ideal_ms_per_1e9']:.2f} | {row['detail']} |")
    out += ["", "### Triton kernels (ahead-of-time, N divisible by 16)", ""]
    if result.get("triton_note"):
        out.append(result["triton_note"])
    out += ["| kernel | module | arch | regs | spill B | neurons/thread | per-thread accesses per time step "
            "(per loop) | B/neuron-step | ideal ms / 10⁹ |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["triton"]:
        out.append(f"| {row['kernel']} | {row['unit']} | sm_{row['arch']} | {_fmt(row['registers'])} | "
                   f"{_fmt(row['spill_bytes'])} | {_fmt(row['elements_per_thread'], 0)} | {_loop_text(row['loops'])} | "
                   f"{_fmt(row['bytes_per_neuron_step'], 3)}{_conditional_text(row)} | {_fmt(row.get('ideal_ms_per_1e9'))} |")
    out += ["", f"### CUDA kernels ({result['cuda_note']})", "",
            "The CUDA kernels take the neuron flags at run time, so the compiler clones the time loop per "
            "flag path; the range covers those loop copies (both sweeps of the backward included). Predicated "
            "accesses (e.g. the optional v_seq store) are counted, so these are upper bounds.", "",
            "| kernel | unit | arch | regs | spill B | neurons/thread | global load / store widths | "
            "B/neuron-step per loop (min–max) |", "|---|---|---|---|---|---|---|---|"]
    for row in result["cuda"]:
        rng = row["bytes_per_neuron_step_range"]
        out.append(f"| `{row['kernel']}` | {row['unit']} | sm_{row['arch']} | {_fmt(row['registers'])} | "
                   f"{_fmt(row['spill_bytes'])} | {row['elements_per_thread']} | "
                   f"{','.join(map(str, row['load_widths']))}B / {','.join(map(str, row['store_widths']))}B | "
                   f"{'–' if rng is None else f'{rng[0]:.2f}–{rng[1]:.2f}'} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the analysis as JSON here")
    parser.add_argument("--cuda-source", choices=["auto", "extension", "nvcc"], default="auto")
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90 (default 80 and 90)")
    args = parser.parse_args(argv)
    # The interpreter replaces @triton.jit functions with Python ones that cannot be compiled.
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("benchmarks.static_gpu: unset TRITON_INTERPRET (it turns kernels into interpreted functions)")
    result = analyse(tuple(args.arch or ARCHS), args.cuda_source,
                     progress=lambda msg: print(f"  compiling {msg}", file=sys.stderr, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))


if __name__ == "__main__":
    main()
