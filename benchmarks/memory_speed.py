"""Memory and speed of one training step, per configuration: spikeops default, spikeops minimum-memory
(``spikeops.minimum_memory``: every block, and within an 8 MiB budget), SpikingJelly 2.0 eager and its
``memopt`` level 1 at both checkpoint budgets.

``python -m benchmarks.memory_speed [--models qkformer ...] [--plot PATH] [--json PATH]`` prints a Markdown
table per model and draws memory against step time, one point per configuration.

Memory is counted by the CPU allocator itself (``torch.profiler`` with ``profile_memory=True`` reports every
allocation and free with the running total), so it covers every byte of the step, whoever holds it:

* **after forward**: bytes alive when forward returned (what the autograd graph holds, the logits, and
  anything the configuration keeps between steps), batch 1;
* **peak**: the most bytes alive at once over the step: forward, recompute and backward, parameter gradients
  included (every configuration allocates the same), batch 1.

Both leave out the model's parameters and buffers and the input, which exist before the step; the model is
built inside the profile, so everything else it allocates (memopt's plans and caches included) is counted. **Step time** is the
median wall time of forward + loss + backward at batch 2 over 11 rounds (no optimizer step: the same for every
configuration), the configurations of one model timed round-robin in one process, so their ratios share the
machine's conditions. Every step starts from rest (``reset_net``) with gradients set to None.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmarks import memory_table
from benchmarks.memory_table import SJ_EAGER

MIB = 2 ** 20


@dataclass
class Configuration:
    label: str
    build: Callable[[torch.Tensor], nn.Module]  # given the example input (memopt profiles one forward)
    peer: bool                                   # SpikingJelly's (True) or spikeops' (False)
    result: dict = field(default_factory=dict)


def _reset(model: nn.Module) -> None:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


def _step(model: nn.Module, x: torch.Tensor) -> None:
    _reset(model)
    model.zero_grad(set_to_none=True)
    model(x).float().square().mean().backward()


def _allocation_events(prof) -> list:
    found = []

    def walk(events):
        for event in events:
            if "Allocation" in str(event.tag):
                found.append(event)
            walk(event.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    return sorted(found, key=lambda e: e.start_time_ns)


def time_steps(configs: list[Configuration], models: list[nn.Module], x: torch.Tensor, rounds: int) -> None:
    """Median step time per configuration, measured round-robin (one step of each per round)."""
    times = [[] for _ in configs]
    for model in models:
        _step(model, x)
    for _ in range(rounds):
        for i, model in enumerate(models):
            t0 = time.perf_counter()
            _step(model, x)
            times[i].append(time.perf_counter() - t0)
    for config, samples in zip(configs, times):
        config.result["step_s"] = statistics.median(samples)


# ---------------------------------------------------------------- the models
SIZE, T = 64, 4
MODELS = ("qkformer", "spikformer", "sdt_v2")  # names in benchmarks.memory_table.WHOLE_MODELS
MINIMUM = "spikeops minimum_memory"
BUDGET_MIB = 8.0  # the minimum-memory issue's bound on what QKFormer holds after forward at this size
ROUNDS = 11  # timed steps per configuration: the configurations differ by a few percent, this machine by more
BUDGETED = f"spikeops minimum_memory, budget {BUDGET_MIB:g} MiB"


def configurations(name: str) -> tuple[str, list[Configuration], tuple[int, ...]]:
    """(title, configurations, image shape) of a model of benchmarks.memory_table's whole-model table: its
    spikeops build, that build under ``spikeops.minimum_memory``, and its SpikingJelly columns."""
    import spikeops

    model = memory_table.WHOLE_MODELS[name][0](size=SIZE, T=T)
    spikeops_build = model.builds[memory_table.SPIKEOPS]
    configs = [Configuration(memory_table.SPIKEOPS, spikeops_build, False),
               Configuration(MINIMUM, lambda x: spikeops.minimum_memory(spikeops_build(x)), False),
               # The blocks are chosen on one sample (the batch the memory columns report), so the timed batch-2
               # model recomputes the same blocks as the measured one.
               Configuration(BUDGETED, lambda x: spikeops.minimum_memory(spikeops_build(x), budget_mib=BUDGET_MIB,
                                                                         example=x[:1]), False)]
    configs += [Configuration(label, model.builds[label], True) for label in memory_table.COLUMNS
                if label != memory_table.SPIKEOPS and label in model.builds]
    return f"{model.name}, {SIZE}x{SIZE}, T={T}", configs, (3, SIZE, SIZE)


def _storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def measure_memory(config: Configuration, x: torch.Tensor) -> tuple[nn.Module, dict]:
    """Builds ``config``'s model and runs two training steps on ``x`` inside one allocator profile (so every
    block's allocation and free is seen, memopt's planning included); returns the model and
    {"after_forward", "peak"}: bytes alive after the second step's forward / at its peak, less the
    parameters, buffers and input (see the module doc)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model = config.build(x)
        _step(model, x)  # lazy initialisation (kernel caches, memopt's first call) before the measured step
        _reset(model)
        model.zero_grad(set_to_none=True)
        gc.collect()
        with record_function("spikeops.memory_speed.step"):
            loss = model(x).float().square().mean()
            with record_function("spikeops.memory_speed.backward"):
                loss.backward()
            del loss
    marks = {e.name(): (e.start_ns(), e.end_ns()) for e in prof.profiler.kineto_results.events()
             if e.name().startswith("spikeops.memory_speed.")}
    step, backward = marks["spikeops.memory_speed.step"], marks["spikeops.memory_speed.backward"]
    events = _allocation_events(prof)
    live, at_backward, peak = 0, None, 0
    for event in events:  # running total from the profile's start: the model was built inside it
        if at_backward is None and event.start_time_ns >= backward[0]:
            at_backward = live
        live += event.extra_fields.alloc_size
        if step[0] <= event.start_time_ns <= step[1]:
            peak = max(peak, live)
    held_anyway = _storage_bytes([*model.parameters(), *model.buffers()])  # x was allocated before the profile
    return model, {"after_forward": at_backward - held_anyway, "peak": peak - held_anyway}


def run_model(name: str, rounds: int) -> tuple[str, list[Configuration]]:
    title, configs, shape = configurations(name)
    x1, x2 = torch.rand(1, *shape), torch.rand(2, *shape)
    models = []
    for config in configs:
        _, memory = measure_memory(config, x1)
        config.result.update(memory)
        if rounds:
            models.append(config.build(x2))
    if rounds:
        time_steps(configs, models, x2, rounds)
    return title, configs


def markdown(title: str, configs: list[Configuration]) -> str:
    eager = next(c for c in configs if c.label == SJ_EAGER).result
    lines = [f"| {title} | after forward (MiB, batch 1) | peak over the step (MiB, batch 1) | step time (ms, batch 2) "
             "| speed vs SpikingJelly eager |", "|---|---|---|---|---|"]
    for c in configs:
        r = c.result
        timed = "step_s" in r
        lines.append(f"| {c.label} | {r['after_forward'] / MIB:.1f} | {r['peak'] / MIB:.1f} | "
                     + (f"{r['step_s'] * 1e3:.0f} | {eager['step_s'] / r['step_s']:.2f}× |" if timed else "– | – |"))
    return "\n".join(lines)


def dominated(configs: list[Configuration]) -> list[tuple[str, str]]:
    """(SpikingJelly point, spikeops point) pairs where the SpikingJelly point has both less peak memory and a
    shorter step: what the issue's "dominating" forbids."""
    out = []
    for peer in (c for c in configs if c.peer):
        for ours in (c for c in configs if not c.peer):
            if peer.result["peak"] < ours.result["peak"] and peer.result["step_s"] < ours.result["step_s"]:
                out.append((peer.label, ours.label))
    return out


def plot(results: dict[str, tuple[str, list[Configuration]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.4), squeeze=False)
    for ax, (title, configs) in zip(axes[0], results.values()):
        for c in configs:
            ax.scatter(c.result["step_s"] * 1e3, c.result["peak"] / MIB, marker="s" if c.peer else "o", s=60,
                       label=c.label)
        ax.set_xlabel("train step time, batch 2 (ms)")
        ax.set_ylabel("peak memory over the step, batch 1 (MiB)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def section(results: dict[str, tuple[str, list[Configuration]]], plot_name: str | None = None) -> str:
    """The report's Markdown: one table per model, the dominance check, the plot."""
    out = []
    for title, configs in results.values():
        out += [markdown(title, configs), ""]
        beaten = dominated(configs) if all("step_s" in c.result for c in configs) else []
        out += [f"- **{peer}** has less peak memory and a shorter step than {ours}" for peer, ours in beaten] or \
            ["- No SpikingJelly configuration has both less peak memory and a shorter step than a spikeops one."]
        out.append("")
    if plot_name:
        out += [f"![peak memory against step time]({plot_name})", ""]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed steps per configuration (0: memory only)")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {name: run_model(name, args.rounds) for name in args.models}
    if args.plot:
        plot(results, args.plot)
    print(section(results, args.plot.name if args.plot else None))
    if args.json:
        args.json.write_text(json.dumps({title: {c.label: c.result for c in cs} for title, cs in results.values()},
                                        indent=1))


if __name__ == "__main__":
    main()
