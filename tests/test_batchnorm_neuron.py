"""BatchNorm -> neuron fused (spikeops/ops/batchnorm_neuron): the same spikes, gradients and running
statistics as nn.BatchNorm followed by the neuron, on every backend and neuron kind, while backward keeps
only BatchNorm's input, the per-channel statistics and v0."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from spikeops.ops.batchnorm_neuron import batchnorm_neuron
from spikeops.ops.neuron.config import FIRE_BIPOLAR, FIRE_INTEGER, make_config
from spikeops.ops.neuron.op import neuron_multi_step
from spikeops.nn.packing import SpikeMaxPool2d

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

ALL_BACKENDS = [pytest.param("torch", id="torch"), *FUSED_BACKENDS]
BASE = dict(v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate=1, alpha=2.0)
KINDS = {
    "lif": dict(tau=2.0),
    "if": dict(tau=None),
    "plif": dict(learnable_tau=True),
    "ielif": dict(tau=2.0, fire_mode=FIRE_INTEGER, levels=4, v_threshold=0.5),
    "bipolar": dict(tau=2.0, fire_mode=FIRE_BIPOLAR, v_threshold=0.5),
    "qif": dict(charge_law="quadratic", tau=2.0, v_c=0.8, a0=1.0, v_reset=-0.1),
    "eif": dict(charge_law="exponential", tau=2.0, delta_T=1.0, theta_rh=0.8, v_reset=-0.1),
}


def _config(kind):
    return make_config(**dict(BASE, **KINDS[kind]))


def _run(fused, backend, kind, x, bn, dtype, training=True, store_v_seq=True, pool=None):
    """One forward and backward, fused or as BatchNorm (then ``SpikeMaxPool2d(**pool)``) then the neuron:
    (spikes, gradients, running statistics)."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    cfg = _config(kind)
    x = x.to(device, dtype).requires_grad_(True)
    bn = bn.to(device, dtype).train(training)
    leak = torch.tensor(0.4, dtype=dtype, device=device, requires_grad=True) if kind == "plif" else None
    if fused:
        spikes, v_last, v_seq = batchnorm_neuron(
            x, None, weight=bn.weight, bias=bn.bias, running_mean=bn.running_mean, running_var=bn.running_var,
            training=training, momentum=bn.momentum, eps=bn.eps, cfg=cfg, leak=leak, backend=backend,
            store_v_seq=store_v_seq, num_batches_tracked=bn.num_batches_tracked, pool=pool)
    else:
        y = bn(x.flatten(0, 1))
        if pool is not None:
            y = SpikeMaxPool2d(**pool, recompute_indices=True)(y)
        spikes, v_last, v_seq = neuron_multi_step(y.view(*x.shape[:2], *y.shape[1:]), None, cfg=cfg, leak=leak,
                                                  backend=backend, store_v_seq=store_v_seq)
    g = torch.Generator().manual_seed(7)
    loss = (spikes * torch.randn(spikes.shape, generator=g).to(device, dtype)).sum() + v_last.square().sum()
    if store_v_seq:
        loss = loss + (v_seq * 0.3).sum()
    loss.backward()
    grads = [x.grad, bn.weight.grad, bn.bias.grad] + ([leak.grad] if leak is not None else [])
    return spikes.detach(), [t.detach() for t in grads], [bn.running_mean.clone(), bn.running_var.clone(),
                                                           bn.num_batches_tracked.clone()]


def _bn(channels, seed=0, momentum=0.1):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels, momentum=momentum)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.2, 0.6)
    return bn


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_fused_matches_batchnorm_then_neuron(backend, kind):
    dtype = torch.float32
    x = torch.randn(4, 2, 3, 5, 5) * 1.5 + 0.3
    ref = _run(False, backend, kind, x, _bn(3), dtype)
    got = _run(True, backend, kind, x, _bn(3), dtype)
    assert got[0].abs().sum() > 0 and torch.equal(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(got[2], ref[2]):
        assert torch.equal(a, b), "running statistics as nn.BatchNorm's"


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("kind", ["lif", "plif", "qif", "bipolar"])
def test_float64_spikes_identical_gradients_within_1e_10(backend, kind):
    x = torch.randn(3, 2, 4, 6) * 1.5 + 0.3
    ref = _run(False, backend, kind, x, nn.BatchNorm1d(4), torch.float64)
    got = _run(True, backend, kind, x, nn.BatchNorm1d(4), torch.float64)
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_eval_mode_uses_the_running_statistics(backend):
    bn = _bn(3)
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 2, 3, 4, 4) + 0.5
    ref = _run(False, backend, "lif", x, bn, torch.float32, training=False)
    got = _run(True, backend, "lif", x, bn, torch.float32, training=False)
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cumulative_momentum_counts_batches_as_batchnorm():
    x = torch.randn(2, 3, 4, 5) + 0.2
    ours, theirs = nn.BatchNorm1d(4, momentum=None), nn.BatchNorm1d(4, momentum=None)
    cfg = _config("lif")
    for step in range(3):
        batchnorm_neuron(x * (step + 1), weight=ours.weight, bias=ours.bias, running_mean=ours.running_mean,
                         running_var=ours.running_var, momentum=None, cfg=cfg, backend="cpu",
                         num_batches_tracked=ours.num_batches_tracked)
        theirs((x * (step + 1)).flatten(0, 1))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


@pytest.mark.parametrize("backend, pool", [("cpu", None), ("torch", "speds"), ("cpu", "speds")])
def test_gradcheck_float64(backend, pool):
    """Without and with the max-pool between BatchNorm and the neuron."""
    cfg = make_config(**dict(BASE, tau=2.0, detach_reset=True))
    shape = (3, 2, 2, 3) if pool is None else (2, 2, 2, 5, 5)
    x = (torch.randn(shape, dtype=torch.float64) + 0.3).requires_grad_(True)
    weight = torch.rand(2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def membrane(x, weight, bias):
        _, v_last, v_seq = batchnorm_neuron(x, weight=weight, bias=bias, cfg=cfg, backend=backend, store_v_seq=True,
                                            pool=SPEDS_POOL if pool else None)
        return v_seq, v_last

    assert torch.autograd.gradcheck(membrane, (x, weight, bias))


@pytest.mark.parametrize("pool", [None, "speds"])
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_backward_keeps_only_the_batchnorm_input_statistics_and_v0(backend, pool):
    device = BACKEND_DEVICE[backend]
    bn = _bn(3).to(device)
    x = (torch.randn(4, 2, 3, 8, 8, device=device) + 0.3).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        spikes, _, _ = batchnorm_neuron(x, weight=bn.weight, bias=bn.bias, running_mean=bn.running_mean,
                                        running_var=bn.running_var, cfg=_config("lif"), backend=backend,
                                        pool=SPEDS_POOL if pool else None)
    assert spikes.shape == ((4, 2, 3, 8, 8) if pool is None else (4, 2, 3, 4, 4))
    full_size = [t for t in saved if t.numel() == x.numel()]
    assert len(full_size) == 1 and full_size[0].data_ptr() == x.data_ptr(), "x only, no normalised copy"
    # x, v0 (one shared resting value), weight, bias, mean, invstd: no normalised or pooled copy, no indices
    assert sum(t.numel() for t in saved) == x.numel() + 1 + 4 * 3


@pytest.mark.parametrize("bad, match", [
    (dict(eps=0.0), "eps: expected a finite number > 0"),
    (dict(momentum=1.5), r"momentum: expected a number in \[0, 1\] or None"),
    (dict(weight=torch.ones(4)), r"weight: expected shape \(3,\)"),
    (dict(running_mean=torch.zeros(3)), "running_var: expected a tensor when running_mean is given"),
    (dict(training=False), "running_mean: expected a tensor with training=False"),
    (dict(bias=torch.zeros(3, dtype=torch.float64)), "bias: expected dtype torch.float32"),
])
def test_batchnorm_arguments_are_checked_as_batchnorm_does(bad, match):
    args = dict(weight=torch.ones(3), bias=torch.zeros(3), cfg=_config("lif"), backend="cpu")
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        batchnorm_neuron(torch.randn(2, 2, 3, 4), **args)


def test_a_refused_call_leaves_the_batch_count_as_it_was():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="v0: expected shape"):
        batchnorm_neuron(torch.randn(2, 2, 3), torch.zeros(5), weight=bn.weight, bias=bn.bias,
                         running_mean=bn.running_mean, running_var=bn.running_var, momentum=None, cfg=_config("lif"),
                         backend="cpu", num_batches_tracked=bn.num_batches_tracked)
    assert bn.num_batches_tracked.item() == 0 and torch.equal(bn.running_mean, torch.zeros(3))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_one_value_per_channel_is_refused_in_training_as_batchnorm_does(backend):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"x: expected more than 1 value per channel when training"):
        batchnorm_neuron(torch.randn(1, 1, 3), cfg=_config("lif"), backend=backend)
    spikes, _, _ = batchnorm_neuron(torch.randn(1, 1, 3), running_mean=torch.zeros(3), running_var=torch.ones(3),
                                    training=False, cfg=_config("lif"), backend=backend)
    assert spikes.shape == (1, 1, 3)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_stateful_neuron_modules_fuse_the_batchnorm_in_front(backend):
    """spikeops.nn.batchnorm_then_neuron: the spikes, membrane and running statistics of bn then the neuron,
    the membrane carried over between calls."""
    import spikeops
    from spikeops.nn.batchnorm_fusion import batchnorm_then_neuron

    device = BACKEND_DEVICE[backend]
    x = (torch.randn(3, 2, 4, 5) * 1.5 + 0.3).to(device)
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        bn = nn.BatchNorm1d(4).to(device)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        neuron = spikeops.PLIF(step_mode="m", backend=backend).to(device)
        outs = [batchnorm_then_neuron(bn, neuron, x) if fused else neuron(bn(x.flatten(0, 1)).view(x.shape))
                for _ in range(2)]
        results.append((outs, neuron.v.detach(), bn.running_mean.clone()))
    (plain, v_plain, mean_plain), (fused, v_fused, mean_fused) = results
    assert all(torch.equal(a, b) for a, b in zip(plain, fused)) and sum(o.sum() for o in fused) > 0
    torch.testing.assert_close(v_fused, v_plain)
    assert torch.equal(mean_fused, mean_plain)


def _sj_model(kind):
    from spikingjelly.activation_based import layer, neuron

    torch.manual_seed(3)
    if kind == "layer":  # SpikingJelly 2.0 style: multi-step layers in a Sequential
        model = nn.Sequential(layer.Conv2d(3, 8, 3, padding=1, step_mode="m"), layer.BatchNorm2d(8, step_mode="m"),
                              neuron.LIFNode(step_mode="m", detach_reset=True),
                              layer.Conv2d(8, 8, 3, padding=1, step_mode="m"), layer.BatchNorm2d(8, step_mode="m"),
                              neuron.ParametricLIFNode(step_mode="m"),
                              layer.Flatten(step_mode="m"), layer.Linear(8 * 6 * 6, 5, step_mode="m"))
    else:  # the official repositories' style: SeqToANNContainer(conv, BatchNorm) then a multi-step neuron
        model = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)),
                              neuron.LIFNode(step_mode="m", tau=2.0),
                              layer.SeqToANNContainer(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)),
                              neuron.IFNode(step_mode="m"))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, 0.0, 0.5)
    return model


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("kind", ["layer", "container"])
def test_convert_fuses_batchnorm_into_the_next_neuron(backend, kind):
    import spikeops
    from spikingjelly.activation_based import functional as sjf

    device = BACKEND_DEVICE[backend]
    x = (torch.rand(4, 2, 3, 6, 6) * 2).to(device)
    runs = []
    for fuse in (False, True):
        model, report = spikeops.convert(_sj_model(kind), backend=backend, fuse_batchnorm=fuse)
        model = model.to(device).train()
        assert bool(report.fused) == fuse and len(report.fused) == (2 if fuse else 0)
        outs = []
        for _ in range(2):
            sjf.reset_net(model)
            out = model(x)
            out.square().sum().backward()
            outs.append(out.detach())
        grads = [p.grad.clone() for p in model.parameters()]
        stats = [b.clone() for b in model.buffers()]
        runs.append((outs, grads, stats, list(model.state_dict())))
    (out_a, grads_a, stats_a, keys_a), (out_b, grads_b, stats_b, keys_b) = runs
    assert keys_a == keys_b, "parameter and buffer names unchanged"
    assert all(torch.equal(a, b) for a, b in zip(out_a, out_b))
    assert all(torch.equal(a, b) for a, b in zip(stats_a, stats_b)), "running statistics as nn.BatchNorm's"
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if kind == "container":
        assert [(f.batchnorm, f.neuron) for f in report.fused] == [("0", "1"), ("2", "3")]
        assert "fused       0 -> 1" in str(report)


def test_converted_conv_bn_lif_keeps_less_for_backward():
    """Per neuron-step of the Conv -> BN -> LIF block: the fused model no longer keeps the BatchNorm output."""
    import spikeops
    from spikeops.nn import held_for_backward

    x = torch.rand(4, 2, 3, 6, 6) * 2
    held = {}
    for fuse in (False, True):
        model, _ = spikeops.convert(_sj_model("container"), backend="cpu", fuse_batchnorm=fuse)
        held[fuse] = held_for_backward(model.train(), x, inputs=[x, *model.parameters()])["held_bytes"]
    neuron_steps = 4 * 2 * (8 + 4) * 6 * 6
    assert held[False] - held[True] >= 4 * neuron_steps  # one float32 per neuron-step no longer held


def test_converted_conv_bn_lif_under_bf16_autocast():
    """bfloat16 autocast: fused and packed, the converted stack fires as the unfused, unpacked one with the same
    gradients (bit for bit against packing off), and holds per neuron-step the bfloat16 conv output, the
    spikes as bits and per-channel statistics: no bfloat16 weight copies (kept as the float32 parameters)."""
    import spikeops
    from spikeops.nn import held_for_backward, packing

    x = (torch.rand(4, 2, 3, 6, 6) > 0.6).to(torch.bfloat16)
    runs = {}
    for fuse, pack in ((False, False), (True, False), (True, True)):
        model, _ = spikeops.convert(_sj_model("container"), backend="cpu", fuse_batchnorm=fuse)
        if not pack:
            packing.disable_spike_packing(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            measured = held_for_backward(model.train(), x, inputs=[x, *model.parameters(), *model.buffers()])
            out = measured["output"]
        out.float().square().sum().backward()
        runs[fuse, pack] = (out.detach(), [p.grad for p in model.parameters()], measured["held_bytes"])
    (out_u, grads_u, _), (out_f, grads_f, _), (out_p, grads_p, held) = runs.values()
    assert torch.equal(out_f, out_u) and torch.equal(out_p, out_f) and out_p.any()
    assert all(torch.equal(a, b) for a, b in zip(grads_p, grads_f)), "packing changes no gradient"
    for a, b in zip(grads_f, grads_u):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    conv_outputs = 4 * 2 * (8 + 4) * 6 * 6  # the neurons' inputs, held in bfloat16
    second_conv_input = 4 * 2 * 8 * 6 * 6
    statistics = 4 * 2 * (8 + 4) + 64  # mean and invstd per channel, float32; allocator rounding
    assert held <= 2 * conv_outputs + second_conv_input // 8 + statistics


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("poison", ["x", "weight"])
def test_a_non_finite_value_silences_its_channel_only(backend, poison):
    """A NaN sample makes its channel's statistics NaN, a NaN weight its normalised values: that channel's
    neurons never fire and keep NaN membranes; the other channels are untouched."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    x = torch.randn(3, 2, 3, 4) + 2.0
    weight = torch.ones(3)
    if poison == "x":
        x[1, 0, 1, 2] = float("nan")
    else:
        weight[1] = float("nan")
    bias = torch.full((3,), 1.5, device=device)  # most neurons fire
    clean, _, _ = batchnorm_neuron(x.to(device), weight=torch.ones(3, device=device), bias=bias, cfg=_config("lif"),
                                   backend=backend, store_v_seq=True)
    spikes, _, v_seq = batchnorm_neuron(x.to(device), weight=weight.to(device), bias=bias, cfg=_config("lif"),
                                        backend=backend, store_v_seq=True)
    assert spikes[:, :, 1].eq(0).all() and v_seq[:, :, 1].isnan().all()
    others = [0, 2]
    assert torch.equal(spikes[:, :, others], clean[:, :, others]) and clean[:, :, others].any()
    assert not v_seq[:, :, others].isnan().any()


# ---------------------------------------------------------------- a max-pool between BatchNorm and neuron
SPEDS_POOL = dict(kernel_size=3, stride=2, padding=1)  # QKFormer's SPEDS pool


def _tied(shape, seed=0):
    """Few distinct values: max-pool windows with ties, where the gradient's routing is decided."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 4, shape, generator=g).float() * 0.5


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kind", ["lif", "plif", "bipolar"])
@pytest.mark.parametrize("pool", [SPEDS_POOL, dict(kernel_size=2, stride=None, ceil_mode=True),
                                  dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(1, 2))],
                         ids=["speds", "ceil", "rect-dilated"])
def test_fused_max_pool_matches_batchnorm_pool_neuron(backend, kind, pool):
    """BatchNorm -> max-pool -> neuron fused: the spikes, gradients and running statistics of nn.BatchNorm then
    SpikeMaxPool2d then the neuron, ties in the pool windows and padding included."""
    x = _tied((3, 2, 3, 7, 9))
    ref = _run(False, backend, kind, x, _bn(3), torch.float32, pool=pool)
    got = _run(True, backend, kind, x, _bn(3), torch.float32, pool=pool)
    assert got[0].abs().sum() > 0 and torch.equal(got[0], ref[0])
    assert got[0].shape == ref[0].shape
    for a, b in zip(got[1], ref[1]):
        assert torch.equal(a, b), "the same kernels in the same order: identical gradients"
    for a, b in zip(got[2], ref[2]):
        assert torch.equal(a, b), "running statistics as nn.BatchNorm's"


@pytest.mark.parametrize("bad, match", [
    (dict(pool=(3, 2)), "pool: expected None or a dict"),
    (dict(pool=dict(stride=2)), "pool: expected None or a dict"),
    (dict(pool=dict(kernel_size=3, return_indices=True)), "pool: expected None or a dict"),
])
def test_pool_argument_is_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        batchnorm_neuron(torch.randn(2, 2, 3, 4, 4), cfg=_config("lif"), backend="cpu", **bad)
    with pytest.raises(ValueError, match="pool: a max-pool needs x of shape"):
        batchnorm_neuron(torch.randn(2, 2, 3, 4), cfg=_config("lif"), backend="cpu", pool=SPEDS_POOL)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_stateful_neuron_fuses_batchnorm_and_pool(backend):
    """A stateful neuron behind a fused pool carries its membrane (of the pooled shape) between calls."""
    import spikeops
    from spikeops.nn.batchnorm_fusion import batchnorm_then_neuron

    device = BACKEND_DEVICE[backend]
    x = (torch.randn(3, 2, 4, 6, 6) * 1.5 + 0.3).to(device)
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(4).to(device)
        pool = nn.MaxPool2d(3, 2, 1)
        neuron = spikeops.LIF(step_mode="m", backend=backend).to(device)
        outs = [batchnorm_then_neuron(bn, neuron, x, pool) if fused
                else neuron(pool(bn(x.flatten(0, 1))).view(3, 2, 4, 3, 3)) for _ in range(2)]
        results.append((outs, neuron.v.detach(), bn.running_mean.clone()))
    (plain, v_plain, mean_plain), (fused, v_fused, mean_fused) = results
    assert all(torch.equal(a, b) for a, b in zip(plain, fused)) and sum(o.sum() for o in fused) > 0
    assert v_fused.shape == (2, 4, 3, 3) and torch.equal(v_fused, v_plain)
    assert torch.equal(mean_fused, mean_plain)


def _speds_step(backend, fuse_pool):
    """One training step of a tiny ImageNet-layout QKFormer (two SPEDS pools in its first embedding, one in
    each later one) with the pools fused into their neurons or not."""
    from spikeops.models import qkformer
    from spikeops.nn import batchnorm_fusion

    torch.manual_seed(0)
    model = qkformer.QKFormer(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=True,
                              backend=backend).train()
    x = torch.rand(2, 3, 32, 32)
    pooled_outputs = []  # the conv outputs [T*B, C, H, W] that are BatchNorm'd, then pooled
    for module in model.modules():
        if getattr(module, "pool", None) is not None:
            module.conv.register_forward_hook(lambda m, args, y: pooled_outputs.append(y.shape))
    fusable = batchnorm_fusion.pool_fusable
    batchnorm_fusion.pool_fusable = fusable if fuse_pool else (lambda pool: False)
    try:
        measured = spikeops_held(model, x)
    finally:
        batchnorm_fusion.pool_fusable = fusable
    out = measured.pop("output")
    out.square().sum().backward()
    return (out.detach(), [p.grad for p in model.parameters()], [b.clone() for b in model.buffers()],
            measured["held_bytes"], pooled_outputs)


def spikeops_held(model, x):
    from spikeops.nn import held_for_backward

    return held_for_backward(model, x, inputs=[x, *model.parameters(), *model.buffers()])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_qkformer_with_fused_pools_trains_as_unfused(backend):
    plain, fused = _speds_step(backend, False), _speds_step(backend, True)
    assert torch.equal(plain[0], fused[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[1], fused[1])), "identical gradients"
    assert all(torch.equal(a, b) for a, b in zip(plain[2], fused[2])), "identical running statistics"
    if backend != "torch":  # the reference keeps what autograd keeps
        # no longer held, per pool: its float32 input (the BatchNorm output) and the neuron's (the pooled tensor)
        shapes = fused[4]
        assert len(shapes) == 4
        freed = sum(4 * (n * c * h * w + n * c * ((h + 1) // 2) * ((w + 1) // 2)) for n, c, h, w in shapes)
        assert plain[3] - fused[3] == freed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, pool", [((4, 2, 3, 9, 9), None), ((4, 2, 3, 9, 9), SPEDS_POOL), ((3, 2, 5, 13), None),
                                         ((4, 3, 6), None)])
def test_backward_renormalises_from_the_saved_statistics_bit_for_bit(monkeypatch, dtype, shape, pool):
    """Backward's normalised input recomputed in one pass from the saved statistics gives the gradients of
    running ATen's batch norm again (the fallback, where a probe finds the former inexact) bit for bit, and
    runs no batch norm in backward."""
    from spikeops.ops.batchnorm_neuron import op, statistics

    if not op._saved_statistics_reproduce(dtype):
        pytest.xfail(f"this machine's ATen does not apply {dtype} batch norm as x * alpha + beta in one rounding: "
                     "backward takes the fallback")
    channels = shape[2]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.7 + 0.2
    calls = []
    op._kernel_rounding(), statistics._kernel_reproduces_aten()  # the probes, outside the count

    class CountingBatchNorms(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # ATen's batch norm, or the kernel that gives its statistics (spikeops.ops.batchnorm_neuron.statistics)
            if func.overloadpacket.__name__ in ("_native_batch_norm_legit", "batch_norm_statistics"):
                calls.append(func)
            return func(*args, **(kwargs or {}))

    results = {}
    for from_statistics in (False, True):
        monkeypatch.setattr(op, "_saved_statistics_reproduce", lambda _dtype: from_statistics)
        calls.clear()
        with CountingBatchNorms():
            results[from_statistics] = _run(True, "cpu", "lif", x, _bn(channels), dtype, pool=pool)
        assert len(calls) == (1 if from_statistics else 2), "forward computes the statistics once; backward again as fallback"
    assert results[True][0].sum() > 0
    for got, ref in zip(results[True], results[False]):
        for a, b in zip(got if isinstance(got, list) else [got], ref if isinstance(ref, list) else [ref]):
            assert torch.equal(a, b)
