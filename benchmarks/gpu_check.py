#!/usr/bin/env python3
"""``make gpu-check DIR=<report dir> WHEELS=<wheel dir>``: proves spikeops' GPU path on a bare NVIDIA machine.

In one command, within a wall-time budget (default 8 minutes), on a machine without internet that has Python,
torch (>= 2.11), Triton (>= 3.6) and nvcc preinstalled:

1. installs every wheel of WHEELS (SpikingJelly 2.0, pytest, hypothesis, ...) into DIR/_site (no network, nothing
   written outside DIR);
2. builds spikeops._C in place on all cores with the CUDA kernels required (for the GPU's own architecture unless
   --arch says otherwise);
3. runs a subset of the GPU tests (the ``cuda``-marked ones and the Triton ones, which run on the GPU here) chosen
   so that every test function and every parameter value (operator, dtype, backend, option) appears at least once;
4. benchmarks on the GPU: LIF forward and forward+backward at [4, 32, 256, 196] and over T, each attention operator
   at the QKFormer size, one backbone training step, with peak CUDA memory, against SpikingJelly 2.0's Triton and
   native CUDA providers and ``torch.compile``, checking spike parity against the reference as it goes;
5. writes DIR/gpu_check.md and DIR/gpu_check.json, prints a short summary.

Exit codes: 0 all passed (or no GPU: it says so and does nothing), 1 a test or parity failure, 2 a set-up failure
(Python/torch/Triton too old, a wheel that does not install, a failed build). ``--dry-run`` does the CPU-side work
(versions, test selection, benchmark plan, report) without a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: spikeops is imported from this checkout (built in place)
    sys.path.insert(0, str(REPO))
EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
MIN_PYTHON, MIN_TORCH, MIN_TRITON = (3, 11), (2, 11), (3, 6)
# Modules the checks import that a bare machine may lack; they come as wheels.
NEEDED_MODULES = ("spikingjelly", "pytest", "hypothesis")
# The pool of GPU tests: cuda-marked (their ids or names say cuda) and Triton ones (on the GPU wherever it exists).
TEST_POOL_ARGS = ("-m", "not slow", "-k", "cuda or triton")
OPERATORS = ("lif", "if", "plif", "qif", "eif", "ielif", "bipolar_lif", "multispike", "qk_token_attention",
             "qk_channel_attention", "spike_driven_attention", "spiking_self_attention", "bipolar_attention",
             "experts_mixture")
DTYPE_WORDS = ("float16", "bfloat16", "float32", "float64", "half", "bf16", "fp16", "fp32")
HEADLINE_SHAPE = (4, 32, 256, 196)
T_SWEEP = (1, 2, 4, 8, 16, 32)
SWEEP_NEURONS = (16, 256, 196)
QKFORMER_SHAPE = (4, 8, 384, 196)   # [T, B, C, N], 6 heads
HEADS = 6


def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="report folder (created)")
    p.add_argument("--wheels", type=Path, default=None, help="folder of .whl files to install first (offline)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    p.add_argument("--budget", type=float, default=480.0, help="wall-time budget in seconds for everything")
    p.add_argument("--arch", default="native",
                   help="TORCH_CUDA_ARCH_LIST for the build: 'native' (the GPU's own), 'default' (setup.py's), or a list")
    p.add_argument("--max-tests", type=int, default=None, help="cap on the number of selected tests")
    p.add_argument("--skip-build", action="store_true", help="use the spikeops._C already built in place")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="CPU-side work only: versions, test selection, plan, report")
    p.add_argument("--no-collect", action="store_true", help="with --dry-run: do not collect the tests (fast)")
    p.add_argument("--list-tests", action="store_true", help="print the selected tests and exit")
    p.add_argument("--bench-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bench-device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--bench-tiny", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs: expected >= 1, got {args.jobs}")
    if args.budget <= 0:
        p.error(f"--budget: expected > 0, got {args.budget}")
    if args.wheels is not None and not args.wheels.is_dir():
        p.error(f"--wheels: {args.wheels} is not a folder")
    return args


def version_tuple(version: str | None) -> tuple[int, ...]:
    if not version:
        return ()
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


# ----------------------------------------------------------------------------------------------- pre-flight
def preflight() -> dict:
    """Versions and the GPU, in this process (torch is imported here, spikeops not)."""
    info = {"python": platform.python_version(), "machine": platform.node(), "platform": platform.platform(),
            "problems": []}
    if sys.version_info[:2] < MIN_PYTHON:
        info["problems"].append(f"Python {info['python']} < {'.'.join(map(str, MIN_PYTHON))}")
    try:
        import torch
    except ImportError as error:
        info["problems"].append(f"torch is not importable: {error}")
        info["gpu"] = None
        return info
    info["torch"], info["torch_cuda"] = torch.__version__, torch.version.cuda
    if version_tuple(torch.__version__)[:2] < MIN_TORCH:
        info["problems"].append(f"torch {torch.__version__} < {'.'.join(map(str, MIN_TORCH))}")
    try:
        import triton
        info["triton"] = triton.__version__
        if version_tuple(triton.__version__)[:2] < MIN_TRITON:
            info["problems"].append(f"triton {triton.__version__} < {'.'.join(map(str, MIN_TRITON))}")
    except ImportError as error:
        info["triton"] = None
        info["problems"].append(f"triton is not importable: {error}")
    for name in ("custom_op", "register_fake", "opcheck"):
        if not hasattr(torch.library, name):
            info["problems"].append(f"torch.library.{name} is missing from torch {torch.__version__}")
    info["api_warnings"] = api_warnings(torch)
    info["gpu"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
                       "memory_gib": round(props.total_memory / 2**30, 1)}
    try:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=30).stdout
        info["nvcc"] = (re.findall(r"release (\S+),", out) or [None])[0]
    except (OSError, subprocess.SubprocessError):
        info["nvcc"] = None
    return info


# Private or recent APIs spikeops uses (checked on torch 2.13/2.14 and Triton 3.8/3.9 here; the GPU machine's
# versions are checked by this list). A missing one is reported, not fatal: the tests then show what breaks.
PRIVATE_APIS = (("torch._C._autograd", "_top_saved_tensors_default_hooks"),
                ("torch._C._autograd", "_push_saved_tensors_default_hooks"),
                ("torch._C._autograd", "_pop_saved_tensors_default_hooks"),
                ("torch._C._autograd", "_saved_tensors_hooks_is_enabled"),
                ("torch._C._functorch", "is_functorch_wrapped_tensor"),
                ("torch._C._functorch", "get_unwrapped"),
                ("torch.compiler", "is_compiling"),
                ("torch.library", "register_autograd"),
                ("triton.language.math", "div_rn"))


def api_warnings(torch) -> list[str]:
    import importlib

    missing = []
    for module, name in PRIVATE_APIS:
        root, *rest = module.split(".")
        try:
            obj = importlib.import_module(root)
            for part in rest:
                obj = getattr(obj, part, None) or importlib.import_module(f"{obj.__name__}.{part}")
            found = hasattr(obj, name)
        except (ImportError, AttributeError):
            found = False
        if not found:
            missing.append(f"{module}.{name} is missing")
    return missing


def child_env(site: Path | None) -> dict:
    env = dict(os.environ)
    paths = [str(REPO)] + ([str(site)] if site else []) + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("TRITON_INTERPRET", None)
    return env


def install_wheels(wheels: Path, site: Path, logfile: Path) -> tuple[bool, str]:
    """Every wheel of `wheels` into `site` (--target: nothing outside the report folder changes), offline."""
    files = sorted(glob.glob(str(wheels / "*.whl")))
    if not files:
        return True, f"no wheels in {wheels}"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(wheels),
           "--target", str(site), "--upgrade", *files]
    with open(logfile, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc == 0, f"{len(files)} wheels -> {site} (pip exit {rc}, log {logfile.name})"


def missing_modules(env: dict) -> list[str]:
    code = ("import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
            "if importlib.util.find_spec(m) is None))")
    out = subprocess.run([sys.executable, "-c", code, *NEEDED_MODULES], capture_output=True, text=True, env=env)
    return out.stdout.split()


def arch_list(arch: str, capability: str | None) -> str | None:
    """TORCH_CUDA_ARCH_LIST for the build: None keeps setup.py's default."""
    if arch == "default":
        return None
    if arch == "native":
        return capability
    return arch


def build(jobs: int, archs: str | None, env: dict, logfile: Path, timeout: float) -> tuple[bool, float, str]:
    env = dict(env, MAX_JOBS=str(jobs), SPIKEOPS_REQUIRE_CUDA="1")
    if archs:
        env["TORCH_CUDA_ARCH_LIST"] = archs
    started = time.time()
    with open(logfile, "w") as f:
        try:
            rc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return False, time.time() - started, f"the build ran past {timeout:.0f} s (log {logfile.name})"
    seconds = time.time() - started
    return rc == 0, seconds, f"exit {rc} after {seconds:.0f} s with {jobs} jobs, archs {archs or 'default'}"


# ----------------------------------------------------------------------------------------------- tests
def collect_tests(env: dict, timeout: float = 300) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "--collect-only", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", *TEST_POOL_ARGS]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout).stdout
    return [line.strip() for line in out.splitlines() if "::" in line and not line.startswith(("ERROR", "<"))]


def test_features(test_id: str) -> set[str]:
    """What a test id exercises: its function, each of its parameter values (per function), and the operator,
    dtype and backend words it names (globally)."""
    function, _, params = test_id.partition("[")
    params = params.rstrip("]")
    tokens = [t for t in re.split(r"[-\[\]]", params) if t]
    feats = {f"fn:{function}"} | {f"param:{function}|{t}" for t in tokens}
    values = {t.rsplit("=", 1)[-1] for t in tokens}  # "kind=lif" -> "lif"
    name = function.rsplit("::", 1)[-1]
    words = values | set(name.lower().split("_"))
    for op in OPERATORS:
        if op in values or re.search(rf"(^|_){op}(_|$)", name):
            feats.add(f"op:{op}")
    for word in words:
        if word in DTYPE_WORDS:
            feats.add(f"dtype:{word}")
        if word in ("cuda", "triton"):
            feats.add(f"backend:{word}")
    ops = {f[3:] for f in feats if f.startswith("op:")}
    backends = {f[8:] for f in feats if f.startswith("backend:")}
    feats |= {f"op-backend:{o}|{b}" for o in ops for b in backends}
    return feats


def select_tests(test_ids: list[str], limit: int | None = None) -> list[str]:
    """A greedy cover: each next test adds the most features not yet covered (the first in collection order among
    equals), until every feature of every test is covered or `limit` tests are chosen. Returned in the order
    chosen, so that a run cut short by the time budget has run the most telling tests first. Deterministic."""
    feats = {t: test_features(t) for t in test_ids}
    uncovered = set().union(*feats.values()) if feats else set()
    chosen: list[str] = []
    remaining = list(test_ids)
    while uncovered and remaining and (limit is None or len(chosen) < limit):
        best = max(remaining, key=lambda t: len(feats[t] & uncovered))  # max keeps the first of equals
        gain = feats[best] & uncovered
        if not gain:
            break
        chosen.append(best)
        uncovered -= gain
        remaining.remove(best)
    return chosen


_OUTCOME = re.compile(r"^(\S+::\S+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b|"
                      r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+::\S+)")


def parse_pytest_output(text: str) -> dict[str, str]:
    """{test id: outcome} from `pytest -v -rA` output (the streamed lines and the summary)."""
    outcomes = {}
    for line in text.splitlines():
        m = _OUTCOME.match(line.strip())
        if m:
            test_id, outcome = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            outcomes[test_id] = outcome.lower()
    return outcomes


def run_tests(test_ids: list[str], env: dict, logfile: Path, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-v", "-rA", "-p", "no:cacheprovider", *test_ids]
    started = time.time()
    timed_out = False
    with open(logfile, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
    outcomes = parse_pytest_output(logfile.read_text(errors="replace"))
    return summarize_tests(test_ids, outcomes, rc, timed_out, time.time() - started)


def summarize_tests(test_ids, outcomes, rc, timed_out, seconds) -> dict:
    counts = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    not_run = [t for t in test_ids if t not in outcomes]
    failed = sorted(t for t, o in outcomes.items() if o in ("failed", "error"))
    return {"selected": len(test_ids), "counts": counts, "failed": failed, "not_run": not_run, "exit": rc,
            "timed_out": timed_out, "seconds": round(seconds, 1)}


# ----------------------------------------------------------------------------------------------- benchmarks
def bench_plan(tiny: bool = False) -> list[dict]:
    """The benchmark cases, in the order they run: the central comparisons first, torch.compile (which spends
    tens of seconds compiling) last, so that a run stopped by the time budget loses the least."""
    lif_shape = (2, 2, 4, 8) if tiny else HEADLINE_SHAPE
    attn_shape = (2, 2, 12, 5) if tiny else QKFORMER_SHAPE
    lif_impls = ["spikeops:cuda", "spikeops:triton", "spikingjelly:triton", "spikingjelly:cuda", "spikingjelly:cupy",
                 "spikeops:torch"]
    plan = []
    for backward in (False, True):
        for impl in lif_impls:
            plan.append({"group": "lif", "impl": impl, "shape": lif_shape, "backward": backward, "dtype": "float32"})
    for impl in ("spikeops:cuda", "spikeops:triton", "spikingjelly:triton"):
        plan.append({"group": "lif", "impl": impl, "shape": lif_shape, "backward": True, "dtype": "bfloat16"})
    for op in ("qk_token_attention", "qk_channel_attention", "spike_driven_attention", "spiking_self_attention",
               "bipolar_attention", "experts_mixture"):
        for impl in ("spikeops:cuda", "spikeops:triton", "spikeops:torch"):
            plan.append({"group": "attention", "op": op, "impl": impl, "shape": attn_shape, "backward": True,
                         "dtype": "float32"})
    for impl in ("spikeops:auto", "spikeops:torch"):
        plan.append({"group": "model", "op": "qkformer_hst_4_384", "impl": impl,
                     "shape": (1 if tiny else 4, 2 if tiny else 32, 3, 32, 32), "backward": True, "dtype": "float32"})
    for T in ((1, 2) if tiny else T_SWEEP):
        for impl in ("spikeops:cuda", "spikeops:triton", "spikingjelly:triton"):
            plan.append({"group": "lif_T", "impl": impl, "shape": (T,) + ((2, 4, 8) if tiny else SWEEP_NEURONS),
                         "backward": True, "dtype": "float32"})
    for backward in (False, True):
        plan.append({"group": "lif", "impl": "torch.compile", "shape": lif_shape, "backward": backward,
                     "dtype": "float32"})
    return plan


def case_name(case: dict) -> str:
    what = case.get("op", "lif")
    direction = "fwd+bwd" if case["backward"] else "fwd"
    return f"{what} {case['impl']} {direction} {case['dtype']} {list(case['shape'])}"


def _time(fn, device: str, min_time: float, max_reps: int = 200) -> dict:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    fn()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    started = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    out = {"median_ms": round(1e3 * times[len(times) // 2], 4), "min_ms": round(1e3 * times[0], 4), "reps": len(times)}
    if device == "cuda":
        out["peak_extra_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 2)
    return out


def _sj_provider(kind: str, provider: str):
    """Pins SpikingJelly 2.0's implementation for `kind` (its selection object, read once from the environment at
    import); returns a restore function. Raises RuntimeError when the provider cannot be pinned."""
    import importlib

    if provider == "cupy":
        raise RuntimeError("SpikingJelly 2.0 has no CuPy backend (its providers: native cuda, triton, torch)")
    try:
        selection = importlib.import_module(f"spikingjelly._ops.{kind}")._selection
    except (ImportError, AttributeError) as error:
        raise RuntimeError(f"SpikingJelly's provider selection is not reachable: {error}") from None
    saved = selection._requested

    def clear():
        for cache in ("_selections", "_compiled_selections"):
            getattr(selection, cache, {}).clear()

    selection._requested = provider
    clear()

    def restore():
        selection._requested = saved
        clear()
    return restore


def _lif_callable(impl: str, x, device: str):
    """(callable returning spikes, cleanup)."""
    import torch

    import spikeops

    family, _, backend = impl.partition(":")
    if family == "spikeops":
        # Spikes only, as the compiled loop returns them: no final membrane stored.
        return (lambda: spikeops.functional.lif(x, tau=2.0, backend=backend, store_v_last=False)[0]), (lambda: None)
    if family == "spikingjelly":
        from spikingjelly.activation_based import functional, neuron

        restore = _sj_provider("lif", backend)
        node = neuron.LIFNode(tau=2.0, step_mode="m").to(device)

        def run():
            functional.reset_net(node)
            return node(x)
        try:
            run()
        except Exception:
            restore()
            raise
        return run, restore
    if impl == "torch.compile":
        def loop(x):
            v = torch.zeros_like(x[0])
            out = []
            for x_t in x:
                h = v + (x_t - v) / 2.0
                s = (h >= 1.0).to(x.dtype)
                s = s + (torch.sigmoid(4 * (h - 1.0)) - torch.sigmoid(4 * (h - 1.0)).detach())  # sigmoid surrogate
                out.append(s)
                v = h * (1 - s.detach())
            return torch.stack(out)
        compiled = torch.compile(loop, dynamic=False)
        return (lambda: compiled(x)), (lambda: None)
    raise ValueError(f"unknown implementation {impl!r}")


def _make_forward(case: dict, impl: str, device: str):
    """(forward callable, tensors to differentiate, cleanup) for `case` run by `impl`; the inputs come from a
    generator seeded 0, so every implementation of a case sees the same inputs."""
    import torch

    from spikeops.ops import attention as A
    from spikeops.ops.bipolar_attention.op import bipolar_attention
    from spikeops.ops.experts_mixture.op import experts_mixture

    dtype = getattr(torch, case["dtype"])
    gen = torch.Generator().manual_seed(0)
    shape = tuple(case["shape"])
    if case["group"] in ("lif", "lif_T"):
        x = (torch.randn(shape, generator=gen) + 0.5).to(device=device, dtype=dtype).requires_grad_(case["backward"])
        fwd, cleanup = _lif_callable(impl, x, device)
        return fwd, [x], cleanup
    fwd, inputs = _attention_callable(case["op"], impl.partition(":")[2], shape, gen, device, dtype, A,
                                      bipolar_attention, experts_mixture)
    return fwd, inputs, (lambda: None)


def run_case(case: dict, device: str, min_time: float, reference: dict) -> dict:
    """Times one case; checks its forward against spikeops' pure-PyTorch reference on the same inputs. Parity
    gates the exit status for spikeops' own backends only (the others are reported)."""
    import torch

    import spikeops

    result = {"name": case_name(case), **{k: (list(v) if isinstance(v, tuple) else v) for k, v in case.items()}}
    family, _, backend = case["impl"].partition(":")
    cleanup = lambda: None  # noqa: E731
    try:
        if family == "spikeops" and backend != "auto":
            why = spikeops.backends.why_unavailable(backend, torch.device(device))
            if why:
                return {**result, "status": "unavailable", "why": why}
        if case["group"] == "model":
            return _model_case(case, result, device, min_time)
        fwd, inputs, cleanup = _make_forward(case, case["impl"], device)
        out = fwd()
        key = (case["group"], case.get("op"), tuple(case["shape"]), case["dtype"], case["backward"])
        if key not in reference:
            ref_fwd, _, _ = _make_forward(case, "spikeops:torch", device)
            reference[key] = ref_fwd().detach().float().cpu()
        ref = reference[key]
        got = out.detach().float().cpu()
        mismatch = int((got != ref).sum()) if got.shape == ref.shape else got.numel()
        # Half precision may flip a spike whose membrane rounds across the threshold; float32 must be exact.
        allowed = 0 if case["dtype"] == "float32" else max(1, ref.numel() // 1000)
        result["parity"] = {"against": "spikeops backend='torch' (reference)", "mismatched_outputs": mismatch,
                            "outputs": ref.numel(), "ok": mismatch <= allowed, "gates_exit": family == "spikeops"}
        if case["backward"]:
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device=device,
                                                                                         dtype=out.dtype)

            def fn():
                for t in inputs:
                    t.grad = None
                fwd().backward(grad)
        else:
            def fn():
                with torch.no_grad():
                    fwd()
        result.update(_time(fn, device, min_time))
        result["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - a case that cannot run is reported, not fatal
        result.update(status="error", why=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    finally:
        cleanup()
    return result


def _attention_callable(op, backend, shape, gen, device, dtype, A, bipolar_attention, experts_mixture):
    import torch

    T, B, C, N = shape
    if op == "bipolar_attention":
        d = C // HEADS
        bshape = (T, B, HEADS, N, d)

        def ternary():
            signs = torch.randint(0, 2, bshape, generator=gen) * 2 - 1
            return (signs * (torch.rand(bshape, generator=gen) < 0.3)).to(device=device, dtype=dtype).requires_grad_()
        q, k = ternary(), ternary()
        v = (torch.rand(bshape, generator=gen) < 0.3).to(device=device, dtype=dtype).requires_grad_()
        return (lambda: bipolar_attention(q, k, v, 1.0, "shiftmax", check_ternary=False, backend=backend)), [q, k, v]
    if op == "experts_mixture":
        eshape = (T, B, N, 4, C)
        router = (torch.rand(eshape[:-1], generator=gen) < 0.2).to(device=device, dtype=dtype).requires_grad_()
        experts = (torch.rand(eshape, generator=gen) < 0.3).to(device=device, dtype=dtype).requires_grad_()
        return (lambda: experts_mixture(router, experts, backend=backend)), [router, experts]
    q, k, v = ((torch.rand(shape, generator=gen) < 0.2).to(device=device, dtype=dtype).requires_grad_()
               for _ in range(3))
    calls = {
        "qk_token_attention": lambda: A.qk_token_attention(q, k, HEADS, backend=backend),
        "qk_channel_attention": lambda: A.qk_channel_attention(q, k, HEADS, backend=backend),
        "spike_driven_attention": lambda: A.spike_driven_attention(q, k, v, HEADS, backend=backend),
        "spiking_self_attention": lambda: A.spiking_self_attention(q, k, v, HEADS, spike_operands=True, backend=backend),
    }
    return calls[op], [q, k, v]


def _model_case(case, result, device, min_time):
    import torch

    import spikeops.models

    torch.manual_seed(0)
    T, B = case["shape"][:2]
    model = spikeops.models.create_model(case["op"], T=T, num_classes=10, backend=case["impl"].partition(":")[2])
    model = model.to(device).train()
    images = torch.rand(tuple(case["shape"][1:]), device=device)
    labels = torch.randint(0, 10, (B,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    result.update(_time(step, device, min_time, max_reps=20))
    result["status"] = "ok"
    return result


def run_benchmarks(plan: list[dict], device: str, deadline: float, min_time: float) -> list[dict]:
    reference: dict = {}
    results = []
    for case in plan:
        if time.time() > deadline:
            results.append({"name": case_name(case), **case, "status": "not run", "why": "time budget spent"})
            continue
        results.append(run_case(case, device, min_time, reference))
        r = results[-1]
        log(f"  {r['name']}: {r['status']}" + (f" {r['median_ms']} ms" if "median_ms" in r else "")
            + (f" ({r.get('why')})" if r.get("why") else ""))
    return results


# ----------------------------------------------------------------------------------------------- report
def parity_failures(result: dict) -> list[str]:
    out = []
    for case in result.get("benchmarks") or []:
        parity = case.get("parity")
        if parity and not parity["ok"] and parity.get("gates_exit", True):
            out.append(f"{case['name']}: {parity['mismatched_outputs']} of {parity['outputs']} outputs differ")
    return out


def exit_code(result: dict) -> int:
    if result.get("setup_error"):
        return EXIT_SETUP
    tests = result.get("tests") or {}
    if tests.get("failed") or parity_failures(result):
        return EXIT_FAILED
    # pytest failing without a failed test (an internal or collection error) is a failure too; a run stopped by
    # the time budget is not (the report and summary say what did not run).
    if not tests.get("dry_run") and not tests.get("timed_out") and tests.get("exit") not in (None, 0, 5):
        return EXIT_FAILED
    return EXIT_OK


def _speedups(benchmarks: list[dict]) -> list[str]:
    """One line per LIF / attention case: spikeops' fastest against each other implementation."""
    rows = {}
    for b in benchmarks:
        if b.get("status") == "ok" and b["group"] in ("lif", "attention"):
            key = (b.get("op", "lif"), b["backward"], b["dtype"], tuple(b["shape"]))
            rows.setdefault(key, {})[b["impl"]] = b["median_ms"]
    lines = []
    for (op, backward, dtype, shape), impls in rows.items():
        ours = {k: v for k, v in impls.items() if k.startswith("spikeops:") and k != "spikeops:torch"}
        if not ours:
            continue
        best_name, best = min(ours.items(), key=lambda kv: kv[1])
        others = ", ".join(f"{k} {v / best:.2f}x" for k, v in impls.items() if k not in ours)
        lines.append(f"{op} {'fwd+bwd' if backward else 'fwd'} {dtype} {list(shape)}: {best_name} {best:.3f} ms"
                     + (f"; others slower by: {others}" if others else ""))
    return lines


def render_markdown(result: dict) -> str:
    pre = result.get("preflight", {})
    gpu = pre.get("gpu")
    lines = ["# spikeops GPU check", "",
             f"- when: {result.get('started')}; wall time {result.get('seconds', 0):.0f} s; exit {result.get('exit')}",
             f"- machine: {pre.get('machine')}; GPU: " + (f"{gpu['name']} (compute {gpu['capability']}, "
                                                           f"{gpu['memory_gib']} GiB)" if gpu else "none"),
             f"- Python {pre.get('python')}, torch {pre.get('torch')} (CUDA {pre.get('torch_cuda')}), "
             f"Triton {pre.get('triton')}, nvcc {pre.get('nvcc')}"]
    if result.get("dry_run"):
        lines.append("- **dry run**: nothing was built, run or timed on a GPU")
    for key in ("setup_error", "wheels", "build"):
        if result.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {result[key]}")
    for problem in pre.get("problems", []):
        lines.append(f"- problem: {problem}")
    for warning in pre.get("api_warnings", []):
        lines.append(f"- API warning: {warning}")
    tests = result.get("tests")
    if tests:
        lines += ["", "## Tests", "",
                  f"{tests['selected']} selected of {tests.get('pool', '?')} GPU tests (every test function and "
                  "parameter value at least once); outcomes: "
                  + (", ".join(f"{n} {k}" for k, n in sorted(tests.get("counts", {}).items())) or "none"),
                  ]
        if tests.get("timed_out"):
            lines.append(f"- stopped at the time budget; {len(tests.get('not_run', []))} not run")
        for failed in tests.get("failed", []):
            lines.append(f"- FAILED `{failed}`")
    bench = result.get("benchmarks")
    if bench:
        lines += ["", "## Benchmarks", "", "| case | status | median ms | min ms | peak extra MiB | parity |",
                  "|---|---|---:|---:|---:|---|"]
        for b in bench:
            parity = b.get("parity")
            ptxt = "" if not parity else ("ok" if parity["ok"] else f"**{parity['mismatched_outputs']} differ**"
                                          + ("" if parity.get("gates_exit", True) else " (not spikeops: reported only)"))
            lines.append(f"| {b['name']} | {b['status']}{' (' + b['why'] + ')' if b.get('why') else ''} | "
                         f"{b.get('median_ms', '')} | {b.get('min_ms', '')} | {b.get('peak_extra_mib', '')} | {ptxt} |")
        speed = _speedups(bench)
        if speed:
            lines += ["", "### spikeops against the others", ""] + [f"- {s}" for s in speed]
    failures = parity_failures(result)
    if failures:
        lines += ["", "## Parity failures", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def write_report(out: Path, result: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "gpu_check.md", out / "gpu_check.json"
    md.write_text(render_markdown(result))
    js.write_text(json.dumps(result, indent=1, default=str))
    return md, js


def summary(result: dict) -> str:
    pre = result.get("preflight", {})
    gpu = pre.get("gpu")
    parts = [f"GPU {gpu['name']} (sm_{gpu['capability'].replace('.', '')})" if gpu else "no GPU"]
    if result.get("setup_error"):
        parts.append(f"SET-UP FAILED: {result['setup_error']}")
    tests = result.get("tests")
    if tests:
        counts = tests.get("counts", {})
        parts.append(f"tests: {tests['selected']} selected, {counts.get('passed', 0)} passed, "
                     f"{len(tests.get('failed', []))} failed, {len(tests.get('not_run', []))} not run"
                     + (" (INCOMPLETE: stopped at the time budget)" if tests.get("timed_out") else ""))
    bench = result.get("benchmarks")
    if bench:
        ok = sum(b.get("status") == "ok" for b in bench)
        parts.append(f"benchmarks: {ok}/{len(bench)} ran, {len(parity_failures(result))} parity failures")
        parts += _speedups(bench)[:4]
    parts.append(f"exit {result.get('exit')}")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- main
def bench_child(args) -> int:
    """Runs the benchmarks in a fresh process (after the build), writing DIR/_bench.json."""
    import torch

    if args.bench_device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    deadline = time.time() + args.budget
    plan = bench_plan(tiny=args.bench_tiny)
    results = run_benchmarks(plan, args.bench_device, deadline, min_time=0.05 if args.bench_tiny else 0.3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "_bench.json").write_text(json.dumps(results, indent=1, default=str))
    return EXIT_OK


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bench_child:
        return bench_child(args)
    started = time.time()
    deadline = started + args.budget
    result: dict = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "dry_run": args.dry_run,
                    "budget_s": args.budget}
    args.out.mkdir(parents=True, exist_ok=True)
    pre = result["preflight"] = preflight()
    site = (args.out / "_site").resolve() if args.wheels else None

    def finish() -> int:
        result["seconds"] = time.time() - started
        result["exit"] = exit_code(result)
        md, js = write_report(args.out, result)
        print(summary(result))
        log(f"report: {md} and {js}")
        return result["exit"]

    if args.list_tests or args.dry_run:
        env = child_env(site)
        if args.no_collect:
            pool = []
        else:
            log("collecting the GPU tests ...")
            pool = collect_tests(env)
        chosen = select_tests(pool, args.max_tests)
        if args.list_tests:
            print("\n".join(chosen))
            log(f"{len(chosen)} of {len(pool)} GPU tests selected")
            return EXIT_OK
        result["tests"] = {"selected": len(chosen), "pool": len(pool), "ids": chosen, "counts": {}, "failed": [],
                           "not_run": chosen, "dry_run": True}
        result["benchmarks"] = [{"name": case_name(c), **c, "status": "planned"} for c in bench_plan()]
        log(f"dry run: {len(chosen)} of {len(pool)} GPU tests selected, {len(result['benchmarks'])} benchmark cases "
            "planned; GPU: " + (pre["gpu"]["name"] if pre.get("gpu") else "none"))
        return finish()
    if pre.get("torch") is None and not args.dry_run:
        result["setup_error"] = "; ".join(pre["problems"]) or "torch is not importable"
        return finish()
    if pre.get("gpu") is None:
        log("no CUDA GPU is visible to torch on this machine: nothing to check (exit 0). "
            "Run `make gpu-check-dry` for the CPU-side dry run.")
        result["setup_error"] = None
        result["note"] = "no GPU: nothing was checked"
        finish()
        return EXIT_OK
    if pre["problems"]:
        result["setup_error"] = "; ".join(pre["problems"])
        return finish()

    if args.wheels:
        log(f"installing the wheels of {args.wheels} into {site} ...")
        ok, message = install_wheels(args.wheels, site, args.out / "wheels.log")
        result["wheels"] = message
        if not ok:
            result["setup_error"] = f"installing the wheels failed: {message}"
            return finish()
    env = child_env(site)
    missing = missing_modules(env)
    if missing:
        result["setup_error"] = f"missing Python packages (supply their wheels with WHEELS=): {' '.join(missing)}"
        return finish()

    if not args.skip_build:
        archs = arch_list(args.arch, pre["gpu"]["capability"])
        log(f"building spikeops._C in place ({args.jobs} jobs, CUDA archs {archs or 'default'}) ...")
        ok, seconds, message = build(args.jobs, archs, env, args.out / "build.log",
                                     timeout=max(60.0, deadline - time.time() - 150))
        result["build"] = message
        if not ok:
            result["setup_error"] = f"the build failed: {message}"
            return finish()
        log(f"built: {message}")

    if not args.skip_tests:
        log("collecting the GPU tests ...")
        pool = collect_tests(env)
        chosen = select_tests(pool, args.max_tests)
        test_budget = max(30.0, (deadline - time.time()) * (0.5 if not args.skip_bench else 0.95))
        log(f"running {len(chosen)} of {len(pool)} GPU tests (at most {test_budget:.0f} s) ...")
        result["tests"] = run_tests(chosen, env, args.out / "tests.log", timeout=test_budget)
        result["tests"]["pool"] = len(pool)
        log(f"tests: {result['tests']['counts']}")

    if not args.skip_bench:
        bench_budget = max(20.0, deadline - time.time() - 15)
        log(f"benchmarking (at most {bench_budget:.0f} s) ...")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--bench-child", "--out", str(args.out),
               "--budget", str(bench_budget - 10)]
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=env, timeout=bench_budget).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        bench_file = args.out / "_bench.json"
        result["benchmarks"] = json.loads(bench_file.read_text()) if bench_file.exists() else []
        if rc != 0:
            result["bench_exit"] = rc
    return finish()


if __name__ == "__main__":
    sys.exit(main())
