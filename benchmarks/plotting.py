"""PNG plots for the report: speed-up vs T and time vs neuron count, from benchmark rows (see
report.load_rows) of the sweeps that bench files tag with extra_info["sweep"] = "T" or "N"."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINE = "plain-loop"


def _series(rows, sweep: str, x_key: str):
    """{(op, device, dtype): {backend: [(x, median_s), ...]}} for one sweep."""
    out = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["sweep"] == sweep and row.get(x_key) is not None:
            out[(row["op"], row["device"], row["dtype"])][row["backend"]].append((row[x_key], row["median"]))
    for per_backend in out.values():
        for points in per_backend.values():
            points.sort()
    return out


def speedup_vs_T(rows, path: Path) -> Path | None:
    """Speed-up of every backend over the plain PyTorch loop at the same T."""
    series = _series(rows, "T", "T")
    panels = [(key, s) for key, s in series.items() if BASELINE in s]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, ((op, device, dtype), per_backend) in zip(axes[0], panels):
        base = dict(per_backend[BASELINE])
        for backend, points in sorted(per_backend.items()):
            xs = [t for t, _ in points if t in base]
            ax.plot(xs, [base[t] / m for t, m in points if t in base], marker="o", label=backend)
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("time steps T")
        ax.set_ylabel(f"speed-up over {BASELINE} (x)")
        ax.set_title(f"{op} fwd+bwd, {dtype.removeprefix('torch.')}, {device}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def time_vs_neurons(rows, path: Path) -> Path | None:
    series = _series(rows, "N", "neurons")
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4.2), squeeze=False)
    for ax, ((op, device, dtype), per_backend) in zip(axes[0], series.items()):
        for backend, points in sorted(per_backend.items()):
            ax.plot([n for n, _ in points], [m * 1e3 for _, m in points], marker="o", label=backend)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("neurons (T = 4)")
        ax.set_ylabel("median time (ms)")
        ax.set_title(f"{op} fwd+bwd, {dtype.removeprefix('torch.')}, {device}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
