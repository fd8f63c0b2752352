"""The headline LIF timed in pairs: spikeops' fused CPU kernel against ``torch.compile`` of the plain loop, one
call of each in turn, so that every pair shares the machine's conditions of that moment.

pytest-benchmark times one backend's rounds after another's; on a shared machine a slow spell over one of them
skews the ratio of their medians (two `make bench` runs minutes apart on the 2-core machine of this report gave
the same two forwards 0.46x and 1.36x). Here each round times one spikeops call and one compiled call back to back, in alternating order, and the
ratio is taken per pair: ``ratio`` is the median over pairs of compiled time / spikeops time (above 1: spikeops
faster), with its quartiles. The calls are those of ``benchmarks.bench_neuron``'s headline cases (LIF at
[T=4, B=32, C=256, HW=196], float32, autograd recording; ``store_v_last=False``, the spikes only, as the loop
returns them).

``python -m benchmarks.paired_speed [--rounds N]`` prints the Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

ROUNDS = 300


@dataclass
class Paired:
    label: str
    ours_s: list
    theirs_s: list

    @property
    def ratios(self) -> list:
        return [theirs / ours for ours, theirs in zip(self.ours_s, self.theirs_s)]

    def row(self) -> str:
        q1, _, q3 = statistics.quantiles(self.ratios, n=4)
        median = statistics.median(self.ratios)
        return (f"| {self.label} | {statistics.median(self.ours_s) * 1e3:.3g} | "
                f"{statistics.median(self.theirs_s) * 1e3:.3g} | **{median:.2f}×** | {q1:.2f}–{q3:.2f} | "
                f"{len(self.ratios)} |")


def time_pairs(label: str, ours: Callable, theirs: Callable, rounds: int, warmup: int = 3) -> Paired:
    """``rounds`` pairs of one call each, the order alternating between rounds."""
    for _ in range(warmup):
        ours(), theirs()
    result = Paired(label, [], [])
    for i in range(rounds):
        for fn, times in ((ours, result.ours_s), (theirs, result.theirs_s))[:: 1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return result


def headline_pairs(rounds: int = ROUNDS) -> list[Paired]:
    from benchmarks.bench_neuron import HEADLINE_SHAPE, _forward_fn

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(HEADLINE_SHAPE, generator=gen) + 0.5).requires_grad_(True)
    grad_out = torch.randn(HEADLINE_SHAPE, generator=gen)
    (ours, _), (theirs, _) = (_forward_fn(backend, "lif", x, None, "cpu") for backend in ("cpu", "torch.compile"))

    def with_backward(forward):
        return lambda: torch.autograd.grad(forward(), [x], grad_out)

    return [time_pairs("forward", ours, theirs, rounds),
            time_pairs("forward+backward", with_backward(ours), with_backward(theirs), max(rounds // 5, 5))]


def markdown(pairs: list[Paired]) -> str:
    lines = ["| LIF [4,32,256,196] float32 cpu | spikeops `cpu` median ms | torch.compile median ms | "
             "ratio (median of pairs) | quartiles | pairs |", "|---|---|---|---|---|---|"]
    return "\n".join(lines + [p.row() for p in pairs])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    print(markdown(headline_pairs(parser.parse_args(argv).rounds)))


if __name__ == "__main__":
    main()
