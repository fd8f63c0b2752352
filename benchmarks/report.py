"""`make bench`: run every benchmarks/bench_*.py (default subset: tests marked `slow` left out),
then write benchmarks/results/REPORT.md with the tables, the PNG plots and the static GPU section.

    .venv/bin/python -m benchmarks.report              # default subset, a few minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.report --slow       # everything
    .venv/bin/python -m benchmarks.report -k lif       # extra pytest arguments after the options

The raw pytest-benchmark JSON goes to benchmarks/results/bench.json, and every run is also
autosaved under .benchmarks/ so runs can be compared across commits with
`pytest-benchmark compare`. Speed-ups are computed only between rows of one group, which ran in
the same pytest session on the same machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from benchmarks import plotting

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SPIKEOPS_BACKENDS = ("torch", "cpu", "cuda", "triton")  # everything else in `backend` is a peer
REFERENCE_PEERS = ("torch",)  # spikeops' own pure-PyTorch reference also gets a speed-up column


# ---------------------------------------------------------------- running
def run_benchmarks(json_path: Path, junit_path: Path, slow: bool, pytest_args: list[str]) -> int:
    files = sorted(str(p.relative_to(REPO)) for p in HERE.glob("bench_*.py"))
    cmd = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", "-o", "addopts=",
           "--benchmark-json", str(json_path), f"--junitxml={junit_path}", "--benchmark-autosave",
           "--benchmark-min-rounds=3", "--benchmark-max-time=0.5", "--benchmark-columns=median,iqr,rounds",
           "-rs", "--tb=short"]
    if not slow:
        cmd += ["-m", "not slow"]
    cmd += pytest_args
    print(f"[bench] {len(files)} files: {' '.join(files)}", flush=True)
    # pytest prints its own progress ([ nn%]) as cases finish.
    return subprocess.call(cmd, cwd=REPO)


def run_static_gpu(json_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    print("[bench] static GPU analysis (ahead-of-time compiles, no GPU needed)", flush=True)
    done = subprocess.run([sys.executable, "-m", "benchmarks.static_gpu", "--json", str(json_path)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return f"## Static GPU analysis\n\nFailed (exit {done.returncode}); run `python -m benchmarks.static_gpu`.\n"
    return done.stdout


# ---------------------------------------------------------------- loading
def load_rows(json_path: Path) -> list[dict]:
    data = json.loads(json_path.read_text())
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        params = bench.get("params") or {}
        rows.append(dict(
            name=bench["name"], group=bench.get("group") or bench["name"],
            backend=str(params.get("backend", info.get("backend", bench["name"]))),
            median=bench["stats"]["median"], iqr=bench["stats"]["iqr"], rounds=bench["stats"]["rounds"],
            neuron_steps=info.get("neuron_steps"), peak_bytes=info.get("peak_bytes"),
            peak_method=info.get("peak_method"), saved_bytes=info.get("saved_bytes"),
            saved_input_bytes=info.get("saved_input_bytes"), sweep=info.get("sweep"), op=info.get("op", ""),
            T=info.get("T"), neurons=info.get("neurons"), device=info.get("device", ""),
            dtype=info.get("dtype", ""), pass_=info.get("pass_", ""),
        ))
    return rows


def load_skips(junit_path: Path) -> list[tuple[str, str]]:
    if not junit_path.exists():
        return []
    skips = []
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            skips.append((f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}",
                          skipped.get("message", "").removeprefix("Skipped: ")))
    return skips


# ---------------------------------------------------------------- tables
def _ms(seconds):
    return f"{seconds * 1e3:.3g}"


def _mb(nbytes):
    return "–" if nbytes is None else f"{nbytes / 2**20:.1f}"


def _per_step(nbytes, steps):
    """Bytes per neuron-step; ops without a neuron-step count (attention, models) get their total in MB."""
    if nbytes is None:
        return "–"
    return f"{nbytes / steps:.2f}" if steps else f"{nbytes / 2**20:.2f} MB"


def group_table(rows: list[dict]) -> list[str]:
    """One group: a row per backend, fastest first, with a speed-up column per peer."""
    rows = sorted(rows, key=lambda r: r["median"])
    peers = [r for r in rows if r["backend"] not in SPIKEOPS_BACKENDS or r["backend"] in REFERENCE_PEERS]
    peers.sort(key=lambda r: r["backend"])
    head = ["backend", "median ms", "IQR ms", "neuron-steps/s", *[f"× vs {p['backend']}" for p in peers],
            "peak MB", "saved for backward, B/neuron-step or MB (+ inputs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        throughput = f"{r['neuron_steps'] / r['median']:.3g}" if r["neuron_steps"] else "–"
        speedups = [f"{p['median'] / r['median']:.2f}" for p in peers]
        saved = _per_step(r["saved_bytes"], r["neuron_steps"])
        if r["saved_input_bytes"]:
            saved += f" (+{_per_step(r['saved_input_bytes'], r['neuron_steps'])})"
        name = f"**{r['backend']}**" if r["backend"] in SPIKEOPS_BACKENDS else r["backend"]
        lines.append("| " + " | ".join([name, _ms(r["median"]), _ms(r["iqr"]), throughput, *speedups,
                                         _mb(r["peak_bytes"]), saved]) + " |")
    return lines


def summary_table(rows: list[dict], sweep: str) -> list[str]:
    """A sweep in one table: median ms per (point, backend) and the best spikeops speed-up over each peer."""
    key = "T" if sweep == "T" else "neurons"
    by_group = defaultdict(list)
    for r in rows:
        if r["sweep"] == sweep:
            by_group[r["group"]].append(r)
    if not by_group:
        return []
    backends = sorted({r["backend"] for r in rows if r["sweep"] == sweep},
                      key=lambda b: (b not in SPIKEOPS_BACKENDS, b))
    lines = ["| group | " + " | ".join(f"{b} ms" for b in backends) + " | best spikeops × vs plain-loop |",
             "|" + "---|" * (len(backends) + 2)]
    for group, members in sorted(by_group.items(), key=lambda kv: (kv[1][0]["op"], kv[1][0][key] or 0)):
        median = {r["backend"]: r["median"] for r in members}
        ours = [median[b] for b in SPIKEOPS_BACKENDS if b in median and b != "torch"]
        best = f"{median['plain-loop'] / min(ours):.2f}" if ours and "plain-loop" in median else "–"
        cells = [_ms(median[b]) if b in median else "–" for b in backends]
        lines.append(f"| {group} | " + " | ".join(cells) + f" | {best} |")
    return lines


# ---------------------------------------------------------------- report
def machine_lines(data: dict, load_before, load_after) -> list[str]:
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or platform.processor() or "unknown CPU"
    import torch

    lines = [f"- date: {data.get('datetime', '')}; commit: {data.get('commit_info', {}).get('id', '?')[:12]}"
             f"{' (dirty)' if data.get('commit_info', {}).get('dirty') else ''}",
             f"- machine: {cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
             f"torch threads {torch.get_num_threads()}; GPU: "
             f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
             f"- load average before / after the run: {load_before:.1f} / {load_after:.1f} "
             "(anything above the core count means other work shared the CPU and times are inflated)"]
    try:
        import spikingjelly
        lines.append(f"- SpikingJelly {getattr(spikingjelly, '__version__', '2.x')}")
    except ImportError:
        lines.append("- SpikingJelly not installed: its rows are skipped")
    return lines


MEMORY_NOTE = (
    "Memory, measured once per case outside the timed rounds (benchmarks/conftest.py): *saved* = bytes of "
    "the distinct storages autograd saves for backward (torch.autograd.graph.saved_tensors_hooks) per "
    "neuron-step; in brackets what it saves of the inputs, which the caller holds anyway. *peak* = the most "
    "memory in use above the level before the call: on CUDA torch.cuda.max_memory_allocated; on CPU the "
    "glibc heap in use (mallinfo2), sampled after every ATen op and every 0.2 ms from a thread (torch has no "
    "CPU allocator statistics; RSS is too noisy). torch.compile rows are sampled by the thread only.")


def write_report(rows, skips, static_md, data, plots, load_before, load_after, path: Path, memory_md: str = "",
                 memory_speed_md: str = "", paired_md: str = "") -> None:
    out = ["# spikeops benchmark report", "",
           "Generated by `make bench` (`.venv/bin/python -m benchmarks.report`). Times are medians of "
           "pytest-benchmark rounds; `× vs X` is X's median / this row's median, both measured in this run.", "",
           *machine_lines(data, load_before, load_after), ""]
    groups = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    headline = [g for g in groups if "[4,32,256,196]" in g and g.startswith("lif ")]
    if headline:
        out += ["## Headline: LIF at [T=4, B=32, C=256, HW=196]", ""]
        for g in sorted(headline):
            out += [f"### {g}", "", *group_table(groups[g]), ""]
    if paired_md:
        out += ["### The headline against torch.compile, timed in rounds (`python -m benchmarks.paired_speed`)", "",
                _paired_speed_doc(), "", paired_md, ""]
    sweeps = [("T", "## LIF forward+backward vs T (100,352 neurons)"), ("N", "## LIF forward+backward vs neuron count (T=4)")]
    for sweep, title in sweeps:
        table = summary_table(rows, sweep)
        if table:
            out += [title, "", *table, ""]
    for name, caption in plots:
        out += [f"![{caption}]({name})", ""]
    others = sorted(g for g in groups if g not in headline and not any(r["sweep"] for r in groups[g]))
    if others:
        out += ["## Every other group", ""]
        for g in others:
            out += [f"### {g}", "", *group_table(groups[g]), ""]
    out += ["## Memory", "", MEMORY_NOTE, ""]
    if memory_md:
        out += ["### Whole models: activations held for backward (`python -m benchmarks.memory_table`)", "",
                memory_md, ""]
    if memory_speed_md:
        out += ["### Memory and speed of a training step: default, minimum-memory, SpikingJelly eager and memopt "
                "(`python -m benchmarks.memory_speed`)", "", _memory_speed_doc().split("\n\n", 1)[1].strip(), "",
                memory_speed_md, ""]
    if skips:
        out += ["## Skipped (reason)", ""]
        reasons = defaultdict(list)
        for case, reason in skips:
            reasons[reason].append(case)
        for reason, cases in sorted(reasons.items()):
            out.append(f"- {reason}: {len(cases)} case(s), e.g. `{cases[0]}`")
        out.append("")
    out.append(static_md)
    path.write_text("\n".join(out))


def _paired_speed_doc() -> str:
    from benchmarks import paired_speed

    return paired_speed.__doc__.split("\n\n", 2)[1].strip()


def _memory_speed_doc() -> str:
    from benchmarks import memory_speed

    return memory_speed.__doc__.split("\n\n", 2)[2].strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the benchmark suite and write benchmarks/results/REPORT.md")
    parser.add_argument("--slow", action="store_true", help="include tests marked slow")
    parser.add_argument("--no-static", action="store_true", help="skip the static GPU section")
    parser.add_argument("--from-json", help="rebuild the report from a saved --benchmark-json file, no run")
    args, pytest_args = parser.parse_known_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "bench.json"  # git-ignored, like every results/*.json
    junit_path = Path(tempfile.gettempdir()) / f"spikeops-bench-{os.getpid()}.xml"  # skip reasons only
    load_before = os.getloadavg()[0]
    if args.from_json:
        json_path = Path(args.from_json)
    else:
        code = run_benchmarks(json_path, junit_path, args.slow, pytest_args)
        if code not in (0, 1) or not json_path.exists():  # 1: some case failed, the rest still count
            sys.exit(f"[bench] pytest exited with {code}; no report written")
    load_after = os.getloadavg()[0]
    data = json.loads(json_path.read_text())
    rows = load_rows(json_path)
    plots = []
    for fn, name, caption in ((plotting.speedup_vs_T, "speedup_vs_T.png", "speed-up vs T"),
                              (plotting.time_vs_neurons, "time_vs_neurons.png", "time vs neuron count")):
        if fn(rows, RESULTS / name):
            plots.append((name, caption))
    static_md = "" if args.no_static else run_static_gpu(RESULTS / "static_gpu.json")
    report = RESULTS / "REPORT.md"
    from benchmarks import memory_speed, memory_table, paired_speed
    print("[bench] the headline LIF timed in rounds in fresh processes (benchmarks.paired_speed)", flush=True)
    paired_md = paired_speed.markdown(paired_speed.headline())
    print("[bench] whole-model memory tables (benchmarks.memory_table, benchmarks.memory_speed)", flush=True)
    speed_results = {name: memory_speed.run_model(name, rounds=memory_speed.ROUNDS) for name in memory_speed.MODELS}
    memory_speed.plot(speed_results, RESULTS / "memory_vs_step_time.png")
    write_report(rows, load_skips(junit_path), static_md, data, plots, load_before, load_after, report,
                 memory_table.markdown(), memory_speed.section(speed_results, "memory_vs_step_time.png"), paired_md)
    print_headline(report)
    print(f"[bench] report: {report.relative_to(REPO)} ({datetime.datetime.now():%H:%M:%S})")


def print_headline(report: Path) -> None:
    """The headline section (LIF at [4, 32, 256, 196], every backend and peer of this run) on stdout."""
    text = report.read_text()
    start = text.find("## Headline")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        print(text[start:end if end > 0 else None].rstrip(), flush=True)


if __name__ == "__main__":
    main()
