"""Activations held for backward, per training step, measured exactly on CPU (float32, train mode).

``python -m benchmarks.memory_table`` prints a Markdown table: QKFormer HST-10-384 at 64x64, T=4, batch 1, as
spikeops builds it (default: spikes kept as bits and BatchNorm fused into the neuron; then with each switched
off) against SpikingJelly 2.0's own QKFormer-10-384; and the Conv -> BN -> LIF block as ``spikeops.convert``
leaves a SpikingJelly model, in bytes per neuron-step, float32 and under bfloat16 autocast. "Held" counts every
tensor autograd saves once per storage (packed spikes at their packed size), leaving out the input and the
parameters, which the caller holds anyway (spikeops.nn.held_for_backward).
"""
from __future__ import annotations

import argparse

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
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return held_for_backward(model.train(), x, inputs=[x, *model.parameters(), *model.buffers()])["held_bytes"]


def qkformer_rows(size: int = 64, T: int = 4) -> list[tuple[str, float]]:
    from spikingjelly.activation_based.model.qkformer import qkformer_10_384

    x = torch.rand(1, 3, size, size)
    rows = []
    fusable, pool_fusable = batchnorm_fusion.fusable, batchnorm_fusion.pool_fusable
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
        batchnorm_fusion.fusable = fusable if fuse else (lambda *args: False)
        batchnorm_fusion.pool_fusable = pool_fusable if fuse_pools else (lambda *args: False)
        try:
            rows.append((label, _held(model, x) / MIB))
        finally:
            batchnorm_fusion.fusable, batchnorm_fusion.pool_fusable = fusable, pool_fusable
    torch.manual_seed(0)
    rows.append(("SpikingJelly 2.0 qkformer_10_384 (eager)", _held(qkformer_10_384(T=T), x) / MIB))
    rows += _memopt_rows(x, T)
    return rows


def _memopt_rows(x: torch.Tensor, T: int) -> list[tuple[str, float]]:
    """SpikingJelly 2.0's memopt level 1 (block checkpointing + 1-bit spike compression) on its QKFormer, with
    the patch embeddings and blocks as targets: it holds less and recomputes every block in backward."""
    from spikingjelly.activation_based.memopt.pipeline import optimize_memory
    from spikingjelly.activation_based.model import qkformer as sj_qkformer

    targets = (sj_qkformer._PatchEmbedInit, sj_qkformer._PatchEmbedStage, sj_qkformer._Block)
    rows = []
    for budget in ("balanced", "memory"):
        torch.manual_seed(0)
        model = sj_qkformer.qkformer_10_384(T=T).train()
        optimize_memory(model, targets, lambda m: m(x), level=1, checkpoint_budget=budget)
        rows.append((f"SpikingJelly 2.0 memopt level 1, checkpoint_budget={budget!r}", _held(model, x) / MIB))
    return rows


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


def markdown() -> str:
    lines = ["| QKFormer HST-10-384, 64x64, T=4, batch 1 | activations held (MiB) |", "|---|---|"]
    lines += [f"| {label} | {mib:.1f} |" for label, mib in qkformer_rows()]
    lines += ["", "| Conv -> BN -> LIF block (converted) | B per neuron-step, float32 | bfloat16 autocast |",
              "|---|---|---|"]
    lines += [f"| {label} | {fp32:.2f} | {bf16:.2f} |" for label, fp32, bf16 in conv_bn_lif_rows()]
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(markdown())


if __name__ == "__main__":
    main()
