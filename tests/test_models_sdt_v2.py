"""Spike-driven Transformer v2 (Meta-SpikeFormer) and QSD-Transformer on spikeops: published parameter
counts, official module layout, the same spikes/logits/gradients on every backend, the LSQ weight
quantiser, the fine-grained distillation loss and a CPU training smoke run.

SpikingJelly 2.0 ships Spike-driven Transformer v1 only (``activation_based/model/spike_driven_transformer.py``),
no v2 / Meta-SpikeFormer definition, so there is no peer model to copy weights into here."""
import math

import pytest
import torch
from torch import nn

from spikeops import IELIF, models
from spikeops.models import lsq, qsd, sdt_v2
from spikeops.models.layers import LIFNeuron

from conftest import BACKEND_DEVICE, FUSED_BACKENDS, HAS_CUDA
from test_models import run_recording as run_model_recording


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """These networks are tiny: on a busy 2-core machine, torch's intra-op thread pool spends ~100x the
    arithmetic's time synchronising (20 s instead of 0.25 s per forward+backward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count_meta(build, **kwargs):
    with torch.device("meta"):
        return models.count_parameters(build(**kwargs))


# ---------------------------------------------------------------- parameter counts
# Meta-SpikeFormer paper, ImageNet table: 15.1 M / 31.3 M / 55.4 M.
PUBLISHED_MILLIONS = {"sdt_v2_t": 15.1, "sdt_v2_m": 31.3, "sdt_v2_l": 55.4}


@pytest.mark.parametrize("name", list(PUBLISHED_MILLIONS))
def test_sdt_v2_parameter_count_matches_paper(name):
    assert round(_count_meta(getattr(models, name)) / 1e6, 1) == PUBLISHED_MILLIONS[name]


@pytest.mark.parametrize("size", ["t", "m", "l"])
def test_qsd_adds_one_step_per_output_channel_and_the_layer_scales(size):
    """QSD = the same network plus an LSQ step per output channel of every conv/linear and two layer-scale
    vectors per transformer block (the official count without its unused ActLSQ parameters)."""
    with torch.device("meta"):
        float_model = getattr(sdt_v2, f"sdt_v2_{size}")()
        quantized = getattr(qsd, f"qsd_sdt_v2_{size}")()
    steps = sum(m.weight.shape[0] for m in float_model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)))
    scales = sum(2 * b.attn.q_conv[1].num_features for b in [*float_model.block3, *float_model.block4])
    assert models.count_parameters(quantized) == models.count_parameters(float_model) + steps + scales
    assert len(lsq.lsq_layers(quantized)) == sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
                                                 for m in quantized.modules())


def test_official_module_names():
    """A few keys of the official state dict (classification/models.py), written from its module names."""
    keys = set(sdt_v2.sdt_v2_t(backend="torch").state_dict())
    for key in ("downsample1_1.encode_conv.bias", "ConvBlock1_1.0.Conv.pwconv1.weight", "ConvBlock2_2.0.conv2.weight",
                "block3.5.attn.q_conv.0.body.1.bn.running_var", "block3.0.attn.v_conv.0.body.2.1.weight",
                "block4.1.attn.proj_conv.1.bias", "block4.1.mlp.fc2_conv.bias", "downsample4.encode_bn.weight",
                "head.weight"):
        assert key in keys, key
    assert not any("lif" in k for k in keys)


def test_qsd_official_checkpoint_loads():
    model = qsd.qsd_transformer(num_classes=10, embed_dims=(16, 32, 64, 64), depths=(1, 1), num_heads=4,
                                img_size=32, backend="torch")
    official = {}
    for key, value in model.state_dict().items():
        official[key.replace(".quantizer.", ".")] = torch.rand_like(value) if value.is_floating_point() else value
        if key.endswith("quantizer.alpha"):  # the official layers also hold an identity ActLSQ
            official[key.replace("quantizer.alpha", "act.zero_point")] = torch.zeros(3)
    qsd.load_official_state_dict(model, {"model": official})
    state = model.state_dict()
    for key, value in official.items():
        if ".act." not in key:
            assert torch.equal(state[qsd.official_key_map([key])[key]], value), key


# ---------------------------------------------------------------- tiny configurations
def tiny_sdt_v2(backend, T=2):
    return sdt_v2.MetaSpikeFormer(T=T, num_classes=10, embed_dims=(8, 16, 32, 32), depths=(1, 1), num_heads=2,
                                  img_size=32, backend=backend)


def tiny_qsd(backend, T=2):
    return qsd.qsd_transformer(T=T, num_classes=10, embed_dims=(8, 16, 32, 32), depths=(1, 1), num_heads=2,
                               img_size=32, backend=backend)


def _randomise_batch_norms(model, seed=3):
    """BN parameters and running statistics away from their fresh values, and for QSD layer-scales of 0.5,
    so that signals reach the head in training and in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5 + 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.5)
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.fill_(0.5)


NEURON_TYPES = (LIFNeuron, IELIF)


def run_recording(model, x):
    return run_model_recording(model, x, neuron_types=NEURON_TYPES)


TINY = {"sdt_v2": tiny_sdt_v2, "qsd": tiny_qsd}


def _parity_cases():
    """Every (T, mode) on the C++ backends; one case per model under the slow Triton interpreter."""
    cases = []
    for kind in TINY:
        for backend in FUSED_BACKENDS:
            name = backend.values[0]
            settings = [(2, "eval")] if name == "triton" and not HAS_CUDA else [(1, "train"), (2, "train"), (1, "eval"),
                                                                                   (2, "eval")]
            cases += [pytest.param(kind, name, T, mode, marks=backend.marks, id=f"{kind}-{name}-T{T}-{mode}")
                      for T, mode in settings]
    return cases


@pytest.mark.parametrize("kind,backend,T,mode", _parity_cases())
def test_backends_agree_spike_for_spike(kind, backend, T, mode):
    torch.manual_seed(0)
    reference = TINY[kind]("torch", T)
    _randomise_batch_norms(reference)
    fused = TINY[kind](backend, T)
    fused.load_state_dict(reference.state_dict())
    reference.train(mode == "train"), fused.train(mode == "train")
    x = torch.rand(2, 3, 32, 32) * 2
    ref_logits, ref_spikes, ref_grads = run_recording(reference, x)
    device = BACKEND_DEVICE[backend]
    logits, spikes, grads = run_recording(fused.to(device), x.to(device))
    if mode == "train":
        # Training-mode BNs over 8 values per channel (2x2 tokens, B=2) make the gradients of every layer
        # before them cancellation noise (|grad| ~ 1e4 where the exact value is ~0) that no two summation
        # orders share; in training mode only the head's gradients are compared, all of them in eval mode.
        grads = {n: g for n, g in grads.items() if n.startswith("head")}
        ref_grads = {n: g for n, g in ref_grads.items() if n.startswith("head")}
    assert len(spikes) == len(ref_spikes) > 0
    for i, (a, b) in enumerate(zip(ref_spikes, spikes)):
        assert torch.equal(a, b), f"neuron call {i}: spikes differ"
    assert ref_spikes[-1].sum() > 0, "the head neuron is silent: the comparison proves little"
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    assert any(g.abs().sum() > 0 for g in ref_grads.values())
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_qsd_spikes_are_multi_bit_on_the_d_grid():
    torch.manual_seed(0)
    model = qsd.qsd_transformer(T=1, D=8, num_classes=10, embed_dims=(8, 16, 32, 32), depths=(1, 1), num_heads=2,
                                img_size=32, backend="cpu")
    _randomise_batch_norms(model)
    spikes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: spikes.append((mod.norm, out)))
             for m in model.modules() if isinstance(m, IELIF)]
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32) * 2)
    for h in hooks:
        h.remove()
    levels = torch.cat([(out * norm).flatten() for norm, out in spikes])
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 8
    assert len(levels.unique()) > 2, "IE-LIF should emit more than binary spikes"


def test_mprf_starts_as_the_identity_and_learns():
    torch.manual_seed(0)
    plain = tiny_qsd("cpu")
    _randomise_batch_norms(plain)
    with_mprf = qsd.qsd_transformer(T=2, mprf=True, num_classes=10, embed_dims=(8, 16, 32, 32), depths=(1, 1),
                                    num_heads=2, img_size=32, backend="cpu")
    missing = with_mprf.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"{b}.attn.attn.attn_lif.mprf.{p}" for b in ("block3.0", "block4.0")
                                     for p in ("a", "b"))
    x = torch.rand(2, 3, 32, 32) * 2
    logits = with_mprf(x)
    torch.testing.assert_close(logits, plain(x))
    logits.square().sum().backward()
    assert with_mprf.block3[0].attn.attn.attn_lif.mprf.a.grad is not None


def test_distillation_head_returns_both_logits_in_training_and_their_mean_in_eval():
    model = sdt_v2.MetaSpikeFormer(T=1, num_classes=5, embed_dims=(8, 16, 32, 32), depths=(1, 1), num_heads=2,
                                   img_size=32, distillation_head=True, backend="torch")
    _randomise_batch_norms(model)
    x = torch.rand(2, 3, 32, 32) * 2
    logits, kd_logits = model(x)
    assert logits.shape == kd_logits.shape == (2, 5)
    model.eval()
    with torch.no_grad():
        spikes = model.lif(model.forward_features(x).flatten(3).mean(3))
        expected = (model.head(spikes).mean(0) + model.head_kd(spikes).mean(0)) / 2
        torch.testing.assert_close(model(x), expected)


def test_bad_arguments_are_rejected_before_running():
    with pytest.raises(ValueError, match="backend"):
        sdt_v2.sdt_v2_t(backend="gpu")
    with pytest.raises(ValueError, match="T"):
        sdt_v2.sdt_v2_t(T=0)
    with pytest.raises(ValueError, match="bits"):
        qsd.qsd_sdt_v2_t(bits=1)
    with pytest.raises(ValueError, match="D"):
        qsd.qsd_sdt_v2_t(D=0)
    with pytest.raises(ValueError, match="num_heads"):
        sdt_v2.MetaSpikeFormer(embed_dims=(8, 16, 30, 30), num_heads=4)
    with pytest.raises(ValueError, match="img_size"):
        tiny_sdt_v2("torch")(torch.rand(1, 3, 64, 64))


def test_set_backend_reaches_every_neuron_and_attention_core():
    model = tiny_qsd("torch")
    models.set_backend(model, "cpu")
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"cpu"}


# ---------------------------------------------------------------- LSQ quantiser
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_values_lie_on_the_signed_grid(bits):
    Qn, Qp = lsq.lsq_range(bits)
    assert (Qn, Qp) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    w = torch.randn(6, 5, 3, 3)
    alpha = torch.rand(6) * 0.2 + 0.05
    codes = lsq.lsq_quantize(w, alpha, bits) / alpha.view(-1, 1, 1, 1)
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
    assert codes.min() >= Qn - 1e-4 and codes.max() <= Qp + 1e-4
    assert len(codes.round().unique()) > 2


def test_lsq_gradients_match_the_lsq_formula_in_float64():
    bits = 4
    Qn, Qp = lsq.lsq_range(bits)
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    alpha = torch.tensor([0.05, 0.1, 0.2, 0.4], dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(w.shape, generator=g, dtype=torch.float64)
    lsq.lsq_quantize(w, alpha, bits).backward(grad_out)

    ratio = (w / alpha.view(-1, 1, 1, 1)).detach()
    inside = (ratio >= Qn) & (ratio <= Qp)
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(w.grad, grad_out * inside)
    d_alpha = torch.where(ratio < Qn, float(Qn), torch.where(ratio > Qp, float(Qp), ratio.round() - ratio))
    expected = (grad_out * d_alpha).sum(dim=(1, 2, 3)) / math.sqrt(w.numel() * Qp)
    torch.testing.assert_close(alpha.grad, expected)


def test_lsq_step_initialises_once_on_the_first_training_forward():
    layer = lsq.LSQConv2d(3, 4, 3, bits=4)
    Qp = lsq.lsq_range(4)[1]
    with torch.no_grad():
        layer.weight.mul_(3)  # stale construction-time steps must be replaced in training
    x = torch.rand(1, 3, 8, 8)
    layer.eval()
    layer(x)
    assert not bool(layer.quantizer.init_state)
    layer.train()
    layer(x)
    expected = 2 * layer.weight.abs().mean() / math.sqrt(Qp)
    torch.testing.assert_close(layer.quantizer.alpha.detach(), expected.expand(4).detach())
    with torch.no_grad():
        layer.weight.mul_(2)
    layer(x)
    torch.testing.assert_close(layer.quantizer.alpha.detach(), expected.expand(4).detach())
    trained = {k: v.clone() for k, v in layer.state_dict().items()}
    fresh = lsq.LSQConv2d(3, 4, 3, bits=4)
    fresh.load_state_dict(trained)  # a checkpoint's steps are kept, not re-initialised
    fresh(x)
    torch.testing.assert_close(fresh.quantizer.alpha, trained["quantizer.alpha"])


def test_lsq_layers_compute_with_the_quantized_weight():
    torch.manual_seed(0)
    for layer, x, op in ((lsq.LSQLinear(5, 3), torch.rand(2, 5), torch.nn.functional.linear),
                         (lsq.LSQConv1d(5, 3, 1), torch.rand(2, 5, 4), torch.nn.functional.conv1d)):
        layer.eval()
        expected = op(x, lsq.lsq_quantize(layer.weight, layer.quantizer.alpha, 4), layer.bias)
        torch.testing.assert_close(layer(x), expected)
        assert not torch.allclose(layer(x), op(x, layer.weight, layer.bias))


# ---------------------------------------------------------------- fine-grained distillation
def _maps(model, x):
    with qsd.AttentionMapRecorder(model) as recorder:
        logits = model(x)
    return logits, recorder.maps


def test_fgd_is_zero_for_the_same_model_positive_otherwise_and_trains_the_student():
    torch.manual_seed(0)
    student = tiny_qsd("cpu")
    _randomise_batch_norms(student)
    teacher = tiny_qsd("cpu")
    teacher.load_state_dict(student.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2
    _, student_maps = _maps(student, x)
    _, teacher_maps = _maps(teacher, x)
    assert len(student_maps) == 2 and student_maps[0].shape == (2, 2, 4, 4)
    assert qsd.fgd_loss(student_maps, teacher_maps).item() == 0.0

    _randomise_batch_norms(teacher, seed=11)
    _, teacher_maps = _maps(teacher, x)
    loss = qsd.fgd_loss(student_maps, teacher_maps)
    assert loss.item() > 0
    loss.backward()
    q_weight = student.block3[0].attn.q_conv[0].body[0].weight
    assert q_weight.grad is not None and q_weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_fgd_rejects_mismatched_maps_and_an_unused_recorder():
    with pytest.raises(ValueError, match="teacher_maps"):
        qsd.fgd_loss([torch.rand(1, 2, 4, 4)], [torch.rand(1, 2, 4, 5)])
    with pytest.raises(ValueError, match="teacher_maps"):
        qsd.fgd_loss([torch.rand(1, 2, 4, 4)], [])
    with pytest.raises(RuntimeError, match="did not run"):
        qsd.AttentionMapRecorder(tiny_qsd("torch")).maps
    with pytest.raises(ValueError, match="model"):
        qsd.AttentionMapRecorder(nn.Linear(2, 2))


# ---------------------------------------------------------------- training smoke
def _train(model, x, y, steps, teacher=None, lr=1e-2):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        if teacher is None:
            loss = nn.functional.cross_entropy(model(x), y)
        else:
            logits, student_maps = _maps(model, x)
            with torch.no_grad():
                _, teacher_maps = _maps(teacher, x)
            loss = nn.functional.cross_entropy(logits, y) + qsd.FGD_WEIGHT * qsd.fgd_loss(student_maps, teacher_maps)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["sdt_v2", "qsd", "qsd+fgd"])
def test_a_few_steps_reduce_the_loss(kind):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(8) % 4
    x = torch.rand(8, 3, 32, 32, generator=g) + y.view(-1, 1, 1, 1) * 0.5  # the class sets the brightness
    torch.manual_seed(0)
    if kind == "sdt_v2":
        model = tiny_sdt_v2("cpu")
        model.head = nn.Linear(32, 4)
    else:
        model = tiny_qsd("cpu")
        model.head = lsq.LSQLinear(32, 4)
    teacher = None
    if kind == "qsd+fgd":
        teacher = tiny_sdt_v2("cpu")  # a float network of the same shape stands in for the ANN teacher
        teacher.eval()
    losses = _train(model, x, y, steps=12, teacher=teacher)
    # Spikes, 4-bit weights and 8-sample BNs make single steps noisy: compare the trend.
    assert sum(losses[-3:]) / 3 < losses[0], losses
