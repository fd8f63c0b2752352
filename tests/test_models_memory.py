"""What the QKFormer backbone holds for backward (issue 15): BatchNorm fused into its neuron (through the SPEDS
max-pools too), spikes, gated attention outputs and the residual spike counts kept as bits. Each mechanism is
exact: the same spikes, gradients and running statistics as the model with all of them off, for QKFormer and for
every other backbone."""
import pytest
import torch
from torch import nn

from spikeops.models import qkformer
from spikeops.nn import batchnorm_fusion, disable_spike_packing, held_for_backward
from spikeops.ops.spike_pack import PackedSpikes, SavedTensorsCounter

from conftest import FUSED_BACKENDS


def _tiny(backend, faithful):
    torch.manual_seed(0)
    model = qkformer.QKFormer(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 2), imagenet=True,
                              faithful=faithful, backend=backend).train()
    for m in model.modules():  # BatchNorm scales of both signs: the pool must not commute with BatchNorm
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.uniform_(m.weight, -0.5, 1.5)
            nn.init.uniform_(m.bias, 0.0, 0.5)
    return model


def _step(backend, faithful, lean):
    model = _tiny(backend, faithful)
    x = torch.rand(2, 3, 32, 32) * 2
    fusable = batchnorm_fusion.fusable
    if not lean:
        disable_spike_packing(model)
        batchnorm_fusion.fusable = lambda *args: False
    try:
        measured = held_for_backward(model, x, inputs=[x, *model.parameters(), *model.buffers()])
    finally:
        batchnorm_fusion.fusable = fusable
    out = measured.pop("output")
    out.square().sum().backward()
    return out.detach(), [p.grad for p in model.parameters()], [b.clone() for b in model.buffers()], measured


@pytest.mark.parametrize("faithful", [False, True], ids=["paper", "faithful"])
@pytest.mark.parametrize("backend", [pytest.param("torch", id="torch"), *FUSED_BACKENDS])
def test_lean_qkformer_trains_as_the_plain_one(backend, faithful):
    plain, lean = _step(backend, faithful, False), _step(backend, faithful, True)
    assert torch.equal(plain[0], lean[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[1], lean[1])), "identical gradients"
    assert all(torch.equal(a, b) for a, b in zip(plain[2], lean[2])), "identical running statistics"
    if backend != "torch":  # the reference neurons keep what autograd keeps
        assert lean[3]["held_bytes"] < plain[3]["held_bytes"] / 2


def test_only_convolution_outputs_are_held_as_floats():
    """Every full-size float tensor the lean model holds is a convolution's output (a fused BatchNorm's input,
    which BatchNorm's backward needs) or the T-fold copy of the image the first convolution reads; spikes,
    gated attention outputs and residual spike counts are held as bits."""
    model = _tiny("cpu", False)
    x = torch.rand(2, 3, 32, 32) * 2
    conv_outputs = set()
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            m.register_forward_hook(lambda m, a, y: conv_outputs.add(y.untyped_storage().data_ptr()))
    held = {}
    with SavedTensorsCounter() as counter:
        original = counter._record

        def record(t, out):
            original(t, out)
            if not isinstance(out, PackedSpikes) and t.is_floating_point() and t.numel() >= 2 * 32 * 16:
                held[t.untyped_storage().data_ptr()] = tuple(t.shape)
        counter._record = record
        out = model(x)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    others = {ptr: shape for ptr, shape in held.items() if ptr not in conv_outputs and ptr not in params}
    assert list(others.values()) == [(4, 3, 32, 32)], others  # T*B copies of the image
    assert counter.packed_bytes > 0
    out.sum().backward()


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("name", ["qkformer_bipolar", "spikformer", "semm", "sdt_v2", "qsd"])
def test_every_backbone_trains_as_its_unfused_unpacked_self(name, backend):
    """The other backbones: spikes kept as bits and BatchNorm fused (default) against both off, two steps."""
    from test_checkpointing import BACKBONES, _assert_identical, _train_step

    build, shape = BACKBONES[name]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2
    results = []
    for lean in (True, False):
        torch.manual_seed(0)
        model = build(backend).train()
        fusable, pool_fusable = batchnorm_fusion.fusable, batchnorm_fusion.pool_fusable
        if not lean:
            disable_spike_packing(model)
            batchnorm_fusion.fusable = batchnorm_fusion.pool_fusable = lambda *args: False
        try:
            torch.manual_seed(5)
            results.append(_train_step(model, x, steps=2))
        finally:
            batchnorm_fusion.fusable, batchnorm_fusion.pool_fusable = fusable, pool_fusable
    _assert_identical(results[0], results[1])  # outputs, gradients, running statistics
