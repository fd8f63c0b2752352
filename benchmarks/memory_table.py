"""Activations held for backward, per training step, measured exactly on CPU (float32, train mode).

``python -m benchmarks.memory_table`` prints Markdown tables:

* whole models (``whole_model_markdown``): QKFormer HST-10-384, Spikformer-8-384, SDT v2 (Meta-SpikeFormer
  15.1 M), SEMM-Spikformer-8-512 and the bipolar QKFormer HST-10-384, batch 1, 224x224, T=4, 1000 classes, one
  row per model: spikeops' model as it trains by default against SpikingJelly 2.0's own zoo model of the same
  network (where it has one), eager and under its ``memopt`` level 1 (block checkpointing + 1-bit spike
  compression), with notes on every difference between the two networks;
* QKFormer HST-10-384 at 64x64 (``qkformer_rows``) with each spikeops mechanism switched off in turn;
* the Conv -> BN -> LIF block as ``spikeops.convert`` leaves a SpikingJelly model, in bytes per neuron-step,
  float32 and under bfloat16 autocast.

"Held" counts every tensor autograd saves once per storage (packed spikes at their packed size), leaving out
the input and the parameters, which the caller holds anyway (spikeops.nn.held_for_backward).

Adding a configuration: a whole model is a ``WholeModel`` whose ``builds`` maps a column label to a function
``build(x) -> nn.Module`` (``x`` the input, for builders that trace or profile a forward); ``COLUMNS`` orders
the labels, a model without a label shows "—" there. ``measure_whole_models(..., measure=)`` takes any
``measure(model, x) -> float`` (default: held MiB), so a peak-memory or step-time table reuses the builders.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import spikeops
import spikeops.nn.batchnorm_fusion as batchnorm_fusion
from spikeops.models import qkformer
from spikeops.nn import disable_spike_packing, held_for_backward

MIB = 2 ** 20


def _held(model: nn.Module, x: torch.Tensor, autocast: bool = False) -> int:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)  # every measurement starts from rest, as a training step does
    if autocast:  # the caller's input as a spiking layer under autocast hands it over: bf16 holds it exactly
        x = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return held_for_backward(model.train(), x, inputs=[x, *model.parameters(), *model.buffers()])["held_bytes"]


@contextlib.contextmanager
def batchnorm_fusion_off(everywhere: bool = True, through_pools: bool = True):
    """Within: no BatchNorm is fused into the neuron after it (``everywhere``), or none through a max-pool
    (``through_pools``); the fusion is decided at every forward."""
    fusable, pool_fusable = batchnorm_fusion.fusable, batchnorm_fusion.pool_fusable
    if everywhere:
        batchnorm_fusion.fusable = lambda *args: False
    if through_pools or everywhere:
        batchnorm_fusion.pool_fusable = lambda *args: False
    try:
        yield
    finally:
        batchnorm_fusion.fusable, batchnorm_fusion.pool_fusable = fusable, pool_fusable


def qkformer_rows(size: int = 64, T: int = 4) -> list[tuple[str, float]]:
    from spikingjelly.activation_based.model.qkformer import qkformer_10_384

    x = torch.rand(1, 3, size, size)
    rows = []
    for label, pack, fuse, fuse_pools in (("spikeops default (bits + BatchNorm fused)", True, True, True),
                                          ("spikeops, spikes not packed", False, True, True),
                                          ("spikeops, BatchNorm not fused through max-pools", True, True, False),
                                          ("spikeops, BatchNorm not fused", True, False, False),
                                          ("spikeops, neither", False, False, False)):
        torch.manual_seed(0)
        model = qkformer.qkformer_hst_10_384(backend="cpu")
        model.T = T
        if not pack:
            disable_spike_packing(model)
        with batchnorm_fusion_off(everywhere=not fuse, through_pools=not fuse_pools):
            rows.append((label, _held(model, x) / MIB))
    torch.manual_seed(0)
    rows.append(("SpikingJelly 2.0 qkformer_10_384 (eager)", _held(qkformer_10_384(T=T), x) / MIB))
    rows += _memopt_rows(x, T)
    return rows


def _memopt_rows(x: torch.Tensor, T: int) -> list[tuple[str, float]]:
    """SpikingJelly 2.0's memopt level 1 (block checkpointing + 1-bit spike compression) on its QKFormer, with
    the patch embeddings and blocks as targets: it holds less and recomputes every block in backward."""
    factory, targets = _sj_qkformer_10_384(T)
    return [(f"SpikingJelly 2.0 memopt level 1, checkpoint_budget={budget!r}",
             held_mib(memopt_build(factory, targets, budget)(x), x)) for budget in ("balanced", "memory")]


def conv_bn_lif_rows(channels: int = 32, size: int = 16, T: int = 4, B: int = 2, depth: int = 4):
    """Bytes per neuron-step of a stack of SeqToANNContainer(Conv, BN) -> LIFNode blocks fed with spikes."""
    from spikingjelly.activation_based import layer, neuron

    def build():
        torch.manual_seed(0)
        blocks = []
        for _ in range(depth):
            blocks += [layer.SeqToANNContainer(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                               nn.BatchNorm2d(channels)),
                       neuron.LIFNode(step_mode="m", detach_reset=True)]
        return nn.Sequential(*blocks)

    x = (torch.rand(T, B, channels, size, size) > 0.7).float()
    steps = depth * T * B * channels * size * size
    rows = []
    for label, fuse in (("spikeops.convert (default)", True), ("spikeops.convert(fuse_batchnorm=False)", False)):
        model, _ = spikeops.convert(build(), backend="cpu", fuse_batchnorm=fuse)
        rows.append((label, _held(model, x) / steps, _held(model, x, autocast=True) / steps))
    sj = build()
    rows.append(("SpikingJelly 2.0 eager", _held(sj, x) / steps, _held(sj, x, autocast=True) / steps))
    return rows


# --- whole models -----------------------------------------------------------------------------------------------

SPIKEOPS = "spikeops default"
SJ_EAGER = "SpikingJelly 2.0 zoo, eager"
SJ_MEMOPT_BALANCED = "SpikingJelly 2.0 memopt L1 balanced"
SJ_MEMOPT_MEMORY = "SpikingJelly 2.0 memopt L1 memory"
COLUMNS = (SPIKEOPS, SJ_EAGER, SJ_MEMOPT_BALANCED, SJ_MEMOPT_MEMORY)
BASELINE = SPIKEOPS  # the column the others are divided by

Build = Callable[[torch.Tensor], nn.Module]


@dataclass(frozen=True)
class WholeModel:
    """One row: ``builds`` maps column labels (``COLUMNS``) to ``build(x) -> nn.Module``; ``notes`` say where
    the networks of two columns differ or why a column is missing."""
    name: str
    size: int
    T: int
    builds: dict[str, Build]
    notes: tuple[str, ...] = ()

    def input(self, batch: int = 1) -> torch.Tensor:
        torch.manual_seed(0)
        return torch.rand(batch, 3, self.size, self.size)


@dataclass(frozen=True)
class Failed:
    """A build or measurement that raised: shown as "fails" with the reason in the notes."""
    reason: str


def _seeded(factory: Callable[[], nn.Module]) -> Build:
    def build(x: torch.Tensor) -> nn.Module:
        torch.manual_seed(0)
        return factory()
    return build


def memopt_build(factory: Callable[[], nn.Module], targets: tuple[type, ...], budget: str) -> Build:
    """SpikingJelly 2.0's ``optimize_memory`` at level 1 (selective block checkpointing, with the first input of
    a checkpointed block kept as 1 bit per element when it is strictly binary), ``targets`` the block classes it
    may checkpoint; it runs one forward on ``x`` to choose. Levels 2-4 search spatial/temporal splits by
    measuring CUDA peak memory (``_measure_peak`` raises without CUDA), so a CPU table stops at level 1."""
    def build(x: torch.Tensor) -> nn.Module:
        from spikingjelly.activation_based.memopt.pipeline import optimize_memory

        torch.manual_seed(0)
        model = factory().train()
        optimize_memory(model, targets, lambda m: m(x), level=1, checkpoint_budget=budget)
        return model
    return build


def _spikingjelly_builds(factory: Callable[[], nn.Module], targets: tuple[type, ...]) -> dict[str, Build]:
    return {SJ_EAGER: _seeded(factory),
            SJ_MEMOPT_BALANCED: memopt_build(factory, targets, "balanced"),
            SJ_MEMOPT_MEMORY: memopt_build(factory, targets, "memory")}


def _sj_qkformer_10_384(T: int):
    from spikingjelly.activation_based.model import qkformer as sj

    return (lambda: sj.qkformer_10_384(T=T)), (sj._PatchEmbedInit, sj._PatchEmbedStage, sj._Block)


def qkformer_model(size: int = 224, T: int = 4) -> WholeModel:
    factory, targets = _sj_qkformer_10_384(T)
    return WholeModel(
        "QKFormer HST-10-384", size, T,
        {SPIKEOPS: _seeded(lambda: qkformer.qkformer_hst_10_384(T=T, backend="cpu")),
         **_spikingjelly_builds(factory, targets)},
        ("SpikingJelly: `qkformer_10_384`, the same network as spikeops' `qkformer_hst_10_384` (at batch 1 "
         "spikeops' `faithful` switch makes no difference). The two differ only in which convs in front of a "
         "BatchNorm carry a bias (16,472,584 parameters against spikeops' 16,473,688), which the BatchNorm cancels "
         "and which changes nothing held. memopt targets its `_PatchEmbedInit`, `_PatchEmbedStage` and `_Block`.",))


class MeanOverTime(nn.Module):
    """``model(x).mean(0)``: logits [B, classes] from a model that returns them per time step, [T, B, classes]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).mean(0)


def spikformer_model(size: int = 224, T: int = 4) -> WholeModel:
    from spikeops.models import spikformer

    def sj_spikformer_8_384():
        from spikingjelly.activation_based.model.spikformer import Spikformer

        # SpikingJelly's zoo names 4-256 (spikformer_ti) and 6-384 (spikformer_s); its Spikformer class builds 8-384
        return MeanOverTime(Spikformer(T=T, img_size_h=size, img_size_w=size, patch_size=16, embed_dims=384,
                                       num_heads=12, mlp_ratio=4.0, depths=8))

    from spikingjelly.activation_based.model.spikformer import SpikformerBlock, SpikformerPatchStem

    return WholeModel(
        "Spikformer-8-384", size, T,
        {SPIKEOPS: _seeded(lambda: spikformer.spikformer_8_384(T=T, backend="cpu")),
         **_spikingjelly_builds(sj_spikformer_8_384, (SpikformerPatchStem, SpikformerBlock))},
        ("SpikingJelly: its `Spikformer` class with `embed_dims=384, num_heads=12, depths=8` (its named "
         "constructors are 4-256 and 6-384); memopt targets `SpikformerPatchStem` and `SpikformerBlock`. "
         "Not quite the same network: SpikingJelly's patch splitter max-pools *before* each stage's LIF, so those "
         "four LIFs run at a quarter of the resolution (the official code, and spikeops, fire before the "
         "pool); its Q/K/V projections are one fused conv (the same weights) and its attention output projection has "
         "no bias (a BatchNorm follows, which cancels it); spikeops keeps the official blocks' two never-called "
         "LayerNorms (16.83 M parameters against 16.80 M; parameters only, nothing held). Its forward returns "
         "logits per time step, [T, B, classes]; the table averages them over T, as spikeops' head does (a mean "
         "holds nothing for backward).",))


class SpikingJellyAttentionCore(nn.Module):
    """SDT v2's linear attention core as the official code writes it on SpikingJelly: per head
    ``LIFNode_0.5(Q (Kᵀ V) · scale)`` over spikes [T, B, C, N]."""

    def __init__(self, core: nn.Module):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.num_heads, self.scale = core.num_heads, core.scale
        self.attn_lif = neuron.LIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, step_mode="m",
                                       surrogate_function=surrogate.Sigmoid(alpha=4.0))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T, B, C, N = q.shape
        q, k, v = (t.reshape(T, B, self.num_heads, C // self.num_heads, N).transpose(-1, -2) for t in (q, k, v))
        y = (q @ (k.transpose(-1, -2) @ v)) * self.scale
        return self.attn_lif(y.transpose(-1, -2).reshape(T, B, C, N))


def with_spikingjelly_neurons(model: nn.Module) -> nn.Module:
    """``model`` (a spikeops SDT v2) as the official code runs it: every spikeops LIF replaced by SpikingJelly
    2.0's multi-step ``LIFNode`` with the same arguments (tau 2, detached hard reset, Sigmoid(alpha=4)), the
    fused attention core by plain matmuls and a ``LIFNode``, spike packing off. Same network and parameters."""
    from spikingjelly.activation_based import neuron, surrogate

    from spikeops.models.sdt_v2 import LinearSpikingAttentionCore
    from spikeops.nn import LIFNeuron, disable_spike_packing

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LIFNeuron):
                setattr(parent, name, neuron.LIFNode(tau=2.0, v_threshold=child.v_threshold, detach_reset=True,
                                                     step_mode="m", surrogate_function=surrogate.Sigmoid(alpha=4.0)))
            elif isinstance(child, LinearSpikingAttentionCore):
                setattr(parent, name, SpikingJellyAttentionCore(child))
    return disable_spike_packing(model)


def sdt_v2_model(size: int = 224, T: int = 4) -> WholeModel:
    from spikeops.models import sdt_v2

    def sj_sdt_v2_t():
        return with_spikingjelly_neurons(sdt_v2.sdt_v2_t(T=T, backend="torch"))

    return WholeModel(
        "SDT v2 (Meta-SpikeFormer 15.1 M)", size, T,
        {SPIKEOPS: _seeded(lambda: sdt_v2.sdt_v2_t(T=T, backend="cpu")),
         **_spikingjelly_builds(sj_sdt_v2_t, (sdt_v2.MSDownSampling, sdt_v2.MSConvBlock, sdt_v2.MSBlock))},
        ("SpikingJelly 2.0 has no Spike-driven Transformer v2 (Meta-SpikeFormer) in its zoo (its `spike_driven_"
         "transformer.sdt_8_384` is v1, another network). The SpikingJelly columns are therefore spikeops' `sdt_v2_t` "
         "network run as the official code runs it, on SpikingJelly 2.0's multi-step `LIFNode` (tau 2, detached "
         "hard reset, Sigmoid(alpha=4); the attention core as plain matmuls and a `LIFNode` at threshold 0.5), "
         "spike packing off; memopt targets `MSDownSampling`, `MSConvBlock` and `MSBlock`. T=4 as in the other "
         "rows (the paper reports T=1 and T=4).",))


def semm_model(size: int = 224, T: int = 4) -> WholeModel:
    from spikeops.models import semm

    return WholeModel(
        "SEMM-Spikformer-8-512", size, T,
        {SPIKEOPS: _seeded(lambda: semm.semm_spikformer_8_512(T=T, backend="cpu"))},
        ("SpikingJelly 2.0 has no SEMM (experts-mixture) model.",))


def qkformer_bipolar_model(size: int = 224, T: int = 4) -> WholeModel:
    from spikeops.models import qkformer_bipolar

    return WholeModel(
        "bipolar QKFormer HST-10-384", size, T,
        {SPIKEOPS: _seeded(lambda: qkformer_bipolar.qkformer_bipolar_hst_10_384(T=T, backend="cpu"))},
        ("SpikingJelly 2.0 has no bipolar self-attention; the closest zoo model is the plain QKFormer of the "
         "first row (BSA has the shapes and parameter count of the SSA it replaces in stage 3).",))


# name -> (model(size, T), the size used unless told otherwise). Each model is tried at 224x224 first; all
# of them fit here (the largest single measurement, SpikingJelly's eager QKFormer, holds about 1 GiB and takes
# a few seconds on one core); a model that does not would get a smaller default size here, with a note.
WHOLE_MODELS: dict[str, tuple[Callable[..., WholeModel], int]] = {
    "qkformer": (qkformer_model, 224),
    "spikformer": (spikformer_model, 224),
    "sdt_v2": (sdt_v2_model, 224),
    "semm": (semm_model, 224),
    "qkformer_bipolar": (qkformer_bipolar_model, 224),
}


def held_mib(model: nn.Module, x: torch.Tensor) -> float:
    return _held(model, x) / MIB


def whole_models(names=None, size: int | None = None, T: int = 4) -> list[WholeModel]:
    names = list(WHOLE_MODELS) if names is None else list(names)
    unknown = [n for n in names if n not in WHOLE_MODELS]
    if unknown:
        raise ValueError(f"models: expected names from {list(WHOLE_MODELS)}, got {unknown}")
    return [WHOLE_MODELS[n][0](size or WHOLE_MODELS[n][1], T) for n in names]


def measure_whole_models(models: list[WholeModel], columns=COLUMNS, measure=held_mib) -> list[dict]:
    """One dict per model: column label -> ``measure(model, x)``, ``Failed(reason)`` or absent (no build).
    Each model is built, measured and dropped before the next, so one measurement's memory is in use at a time."""
    results = []
    for spec in models:
        x = spec.input()
        row = {}
        for column in columns:
            build = spec.builds.get(column)
            if build is None:
                continue
            try:
                model = build(x)
                row[column] = measure(model, x)
            except Exception as error:  # recorded in the table's notes instead of stopping the table
                row[column] = Failed(f"{type(error).__name__}: {error}".splitlines()[0][:200])
            finally:
                model = None
                gc.collect()
        results.append(row)
    return results


def whole_model_markdown(models: list[WholeModel] | None = None, results: list[dict] | None = None,
                         columns=COLUMNS, unit: str = "MiB") -> str:
    models = whole_models() if models is None else models
    results = measure_whole_models(models, columns) if results is None else results
    lines = [f"| model, batch 1 | image, T | " + " | ".join(f"{c} ({unit})" for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    notes: list[str] = []

    def note(text: str) -> int:
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    for spec, row in zip(models, results):
        refs = [note(n) for n in spec.notes]
        cells = []
        base = row.get(BASELINE)
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append("—")
            elif isinstance(value, Failed):
                cells.append(f"fails [{note(f'{spec.name}, {column}: {value.reason}')}]")
            elif column == BASELINE or not isinstance(base, float):
                cells.append(f"**{value:.1f}**" if column == BASELINE else f"{value:.1f}")
            else:
                cells.append(f"{value:.1f} ({value / base:.2f}×)")
        name = spec.name + (" [" + ", ".join(map(str, refs)) + "]" if refs else "")
        lines.append(f"| {name} | {spec.size}×{spec.size}, {spec.T} | " + " | ".join(cells) + " |")
    lines += ["", f"(×: relative to {BASELINE}.) memopt level 1 checkpoints the listed blocks (`balanced`: about "
              "3/4 of them, `memory`: all) and recomputes them in backward; spikeops' default recomputes only "
              "neurons and normalisations."]
    lines += [""] + [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
    return "\n".join(lines)


def markdown(models=None, size: int | None = None) -> str:
    lines = ["| QKFormer HST-10-384, 64x64, T=4, batch 1 | activations held (MiB) |", "|---|---|"]
    lines += [f"| {label} | {mib:.1f} |" for label, mib in qkformer_rows()]
    lines += ["", "| Conv -> BN -> LIF block (converted) | B per neuron-step, float32 | bfloat16 autocast |",
              "|---|---|---|"]
    lines += [f"| {label} | {fp32:.2f} | {bf16:.2f} |" for label, fp32, bf16 in conv_bn_lif_rows()]
    return whole_model_markdown(whole_models(models, size)) + "\n\n" + "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {','.join(WHOLE_MODELS)} (default: all)")
    parser.add_argument("--size", type=int, help="image size for every whole model (default: each model's own)")
    parser.add_argument("--whole-only", action="store_true", help="only the whole-model table")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else None
    if args.whole_only:
        print(whole_model_markdown(whole_models(names, args.size)))
    else:
        print(markdown(names, args.size))


if __name__ == "__main__":
    main()
