"""The headline LIF timed in rounds: spikeops' fused CPU kernel against ``torch.compile`` of the plain loop (and,
forward, against ATen copying the same bytes), one call of each in turn, in several fresh processes.

pytest-benchmark times one backend's rounds after another's; on a shared machine a slow spell over one of them
skews the ratio of their medians (two `make bench` runs minutes apart on the 2-core machine of this report gave
the same two forwards 0.46x and 1.36x). Here each round times one call of every contender back to back, the
order rotating from round to round, and ratios are taken per round: ``ratio`` is the median over rounds of
compiled time / spikeops time (above 1: spikeops faster), with its quartiles. A process's state decides a lot
as well (where the allocator places the 25.7 MB outputs, which of them take page faults), so the rounds run in
several fresh processes, pooled; ``per-process medians`` is the range of the processes' own ratios. The forward
rounds also time ``x.clone()``: ATen reading x once and writing as many bytes, the memory floor both forwards
work against (``floor / spikeops`` above 1: spikeops faster than the copy). The calls are those of
``benchmarks.bench_neuron``'s headline cases (LIF at [T=4, B=32, C=256, HW=196], float32, autograd recording;
``store_v_last=False``, the spikes only, as the loop returns them).

``python -m benchmarks.paired_speed [--processes K] [--rounds N]`` prints the Markdown table; ``--processes 0``
times in this process only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROUNDS = 300
PROCESSES = 6
OURS, THEIRS, FLOOR = "spikeops", "torch.compile", "floor"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Rounds:
    """Seconds per call of each contender, one entry per round (in every list, index i is round i)."""
    label: str
    seconds: dict[str, list] = field(default_factory=dict)
    process_ratios: list = field(default_factory=list)  # the median ratio of each pooled process

    def ratios(self, other: str = THEIRS) -> list:
        """Per round, ``other``'s time / spikeops' time."""
        return [theirs / ours for ours, theirs in zip(self.seconds[OURS], self.seconds[other])]

    def row(self) -> str:
        ratios = self.ratios()
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        median_ms = {name: f"{statistics.median(s) * 1e3:.3g}" for name, s in self.seconds.items()}
        floor = f"{median_ms[FLOOR]} ({statistics.median(self.ratios(FLOOR)):.2f}×)" if FLOOR in median_ms else "–"
        spread = (f"{min(self.process_ratios):.2f}–{max(self.process_ratios):.2f} ({len(self.process_ratios)})"
                  if self.process_ratios else "–")
        return (f"| {self.label} | {median_ms[OURS]} | {median_ms[THEIRS]} | **{statistics.median(ratios):.2f}×** | "
                f"{q1:.2f}–{q3:.2f} | {spread} | {floor} | {len(ratios)} |")


def time_rounds(label: str, contenders: dict[str, Callable], rounds: int, warmup: int = 3) -> Rounds:
    """``rounds`` rounds of one call of each contender; round i starts with contender i mod their number."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    result = Rounds(label, {name: [] for name in names})
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name]()
            result.seconds[name].append(time.perf_counter() - start)
    return result


def headline_rounds(rounds: int = ROUNDS) -> list[Rounds]:
    """The two headline cases timed in this process."""
    from benchmarks.bench_neuron import HEADLINE_SHAPE, _forward_fn

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(HEADLINE_SHAPE, generator=gen) + 0.5).requires_grad_(True)
    grad_out = torch.randn(HEADLINE_SHAPE, generator=gen)
    (ours, _), (theirs, _) = (_forward_fn(backend, "lif", x, None, "cpu") for backend in ("cpu", "torch.compile"))
    floor = x.detach().clone

    def with_backward(forward):
        return lambda: torch.autograd.grad(forward(), [x], grad_out)

    return [time_rounds("forward", {OURS: ours, THEIRS: theirs, FLOOR: floor}, rounds),
            time_rounds("forward+backward", {OURS: with_backward(ours), THEIRS: with_backward(theirs)},
                        max(rounds // 5, 5))]


def pooled(processes: int, run_process: Callable[[], list[Rounds]]) -> list[Rounds]:
    """The rounds of ``processes`` runs of ``run_process`` joined per label, each run's median ratio kept."""
    joined: dict[str, Rounds] = {}
    for _ in range(processes):
        for part in run_process():
            into = joined.setdefault(part.label, Rounds(part.label, {name: [] for name in part.seconds}))
            for name, seconds in part.seconds.items():
                into.seconds[name].extend(seconds)
            into.process_ratios.append(statistics.median(part.ratios()))
    return list(joined.values())


def fresh_process_rounds(rounds: int) -> list[Rounds]:
    """headline_rounds in a new interpreter (``--child``), read back from the JSON it prints."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.paired_speed", "--child", "--rounds", str(rounds)],
                          cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    return [Rounds(label, seconds) for label, seconds in json.loads(done.stdout.splitlines()[-1]).items()]


def headline(processes: int = PROCESSES, rounds: int = ROUNDS) -> list[Rounds]:
    if processes == 0:
        return headline_rounds(rounds)
    return pooled(processes, lambda: fresh_process_rounds(rounds))


def markdown(results: list[Rounds]) -> str:
    lines = ["| LIF [4,32,256,196] float32 cpu | spikeops `cpu` median ms | torch.compile median ms | "
             "ratio (median of rounds) | quartiles | per-process medians (processes) | floor: x.clone() ms "
             "(floor / spikeops) | rounds |", "|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [r.row() for r in results])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--child", action="store_true", help="time in this process, print the rounds as JSON")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({r.label: r.seconds for r in headline_rounds(args.rounds)}))
        return
    print(markdown(headline(args.processes, args.rounds)))


if __name__ == "__main__":
    main()
