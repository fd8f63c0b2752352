"""The whole-model memory table (benchmarks/memory_table.py; README "Memory-lean training"): what its measurement
counts and how it renders. Tiny networks of the same families as the table's rows, so every figure here comes
from the same build functions and measure as the table's; no figure is hard-coded."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks import memory_table as mt
from spikeops.models import qkformer
from spikeops.nn import disable_spike_packing

UNPACKED = "spikeops, spikes not packed"
T = 2


def _tiny_spikeops_qkformer(pack: bool = True):
    def factory():
        model = qkformer.QKFormer(T=T, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1), backend="cpu")
        return model if pack else disable_spike_packing(model) or model
    return factory


def _tiny_spikingjelly_qkformer():
    from spikingjelly.activation_based.model import qkformer as sj

    def factory():
        return sj.QKFormer(T=T, num_classes=10, embed_dims=32, num_heads=(2, 2, 2), depths=(1, 1, 1))
    return factory, (sj._PatchEmbedInit, sj._PatchEmbedStage, sj._Block)


@pytest.fixture(scope="module")
def tiny():
    factory, targets = _tiny_spikingjelly_qkformer()
    spec = mt.WholeModel("tiny QKFormer", 32, T,
                         {mt.SPIKEOPS: mt._seeded(_tiny_spikeops_qkformer()),
                          UNPACKED: mt._seeded(_tiny_spikeops_qkformer(pack=False)),
                          **mt._spikingjelly_builds(factory, targets)})
    columns = (mt.SPIKEOPS, UNPACKED, *mt.COLUMNS[1:])
    shapes = []

    def held_and_shape(model, x):  # the output shape of each column's model, in column order
        held = mt.held_mib(model, x)
        shapes.append(tuple(model(x).shape))
        return held

    row = mt.measure_whole_models([spec], columns, measure=held_and_shape)[0]
    return spec, columns, row, dict(zip(columns, shapes))


def test_the_tiny_networks_have_the_same_weights_on_both_sides():
    # conv / linear weights alike (SpikingJelly fuses Q, K, V into one conv of the same size); the two differ only
    # in which convs in front of a BatchNorm carry a bias, which the BatchNorm cancels
    def weights(model):
        return sum(p.numel() for p in model.parameters() if p.dim() > 1)

    assert weights(_tiny_spikeops_qkformer()()) == weights(_tiny_spikingjelly_qkformer()[0]())


def test_every_column_is_measured(tiny):
    spec, columns, row, _ = tiny
    assert set(row) == set(columns)
    assert all(isinstance(row[c], float) and row[c] > 0 for c in columns), row


def test_every_build_gives_the_same_output_shape(tiny):
    _, columns, _, shapes = tiny
    assert set(shapes) == set(columns) and set(shapes.values()) == {(1, 10)}, shapes


def test_spikeops_default_holds_less_than_unpacked_and_than_spikingjelly_eager(tiny):
    _, _, row, _ = tiny
    assert row[mt.SPIKEOPS] < row[UNPACKED] < row[mt.SJ_EAGER]


def test_memopt_holds_less_the_more_it_checkpoints(tiny):
    _, _, row, _ = tiny
    assert row[mt.SJ_MEMOPT_MEMORY] < row[mt.SJ_MEMOPT_BALANCED] < row[mt.SJ_EAGER]


def test_batchnorm_fusion_off_holds_more_and_is_undone():
    spec = mt.WholeModel("tiny", 32, T, {mt.SPIKEOPS: mt._seeded(_tiny_spikeops_qkformer())})
    x = spec.input()
    fused = mt.held_mib(spec.builds[mt.SPIKEOPS](x), x)
    with mt.batchnorm_fusion_off():
        unfused = mt.held_mib(spec.builds[mt.SPIKEOPS](x), x)
    assert unfused > fused
    assert mt.held_mib(spec.builds[mt.SPIKEOPS](x), x) == fused


def test_the_measure_leaves_out_input_and_parameters():
    # a bias-free linear layer saves only its input and weight for backward: nothing is held beyond them
    x = torch.rand(4, 8)
    assert mt.held_mib(nn.Linear(8, 8, bias=False), x) == 0
    # a ReLU after it saves its result, [4, 8] float32, and nothing else
    held = mt.held_mib(nn.Sequential(nn.Linear(8, 8, bias=False), nn.ReLU()), x) * mt.MIB
    assert held == 4 * 8 * 4


def _dense(x):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _raises(x):
    raise RuntimeError("memopt needs CUDA here\nsecond line")


def test_markdown_dashes_failures_ratios_and_notes():
    spec = mt.WholeModel("toy", 8, 1, {mt.SPIKEOPS: _dense, mt.SJ_EAGER: _dense, mt.SJ_MEMOPT_BALANCED: _raises},
                         notes=("a note on the toy",))
    results = mt.measure_whole_models([spec])
    assert isinstance(results[0][mt.SJ_MEMOPT_BALANCED], mt.Failed)
    assert mt.SJ_MEMOPT_MEMORY not in results[0]
    text = mt.whole_model_markdown([spec], results)
    row = next(line for line in text.splitlines() if line.startswith("| toy"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "toy [1]" and cells[1] == "8×8, 1"
    assert cells[2].startswith("**") and cells[3].endswith("(1.00×)")  # the same network on both sides
    assert cells[4] == "fails [2]" and cells[5] == "—"
    assert "[1] a note on the toy" in text
    assert "[2] toy, SpikingJelly 2.0 memopt L1 balanced: RuntimeError: memopt needs CUDA here" in text
    assert "second line" not in text


def test_every_registered_model_has_a_spikeops_build_and_explains_missing_columns():
    for spec in mt.whole_models():
        assert mt.SPIKEOPS in spec.builds, spec.name
        assert set(spec.builds) <= set(mt.COLUMNS), spec.name
        assert spec.notes, f"{spec.name}: every row says what its SpikingJelly columns are (or why they are missing)"
    with pytest.raises(ValueError, match="models"):
        mt.whole_models(["no_such_model"])


@pytest.mark.slow
def test_registered_models_build_the_same_output_shape_on_every_side():
    """The table's own builds at a small size (slow: full-width models, about a minute on two cores)."""
    for spec in mt.whole_models(size=32, T=1):
        x = spec.input()
        shapes = {c: tuple(build(x).train()(x).shape) for c, build in spec.builds.items()}
        assert set(shapes.values()) == {(1, 1000)}, (spec.name, shapes)
