"""Backbone variants (spikeops.models): CIFAR Spikformer, SEMM-Spikformer, bipolar-attention QKFormer.
Published parameter counts, the official CIFAR checkpoint layout, the same spikes/logits/gradients on every
backend, statelessness, argument checks, and a few training steps that reduce the loss."""
import pytest
import torch

from spikeops import models
from spikeops.attention_bipolar import BipolarSelfAttention
from spikeops.attention_experts import EMSA, EMSP
from spikeops.models import qkformer, qkformer_bipolar, semm, spikformer_cifar
from spikeops.models.layers import LIFNeuron
from spikeops.models.stateless import StatelessNeuron, make_stateless

from conftest import BACKEND_DEVICE, FUSED_BACKENDS
from test_models import _bn, _conv_bn, _numel, calibrate_batch_norm, random_state, run_recording

NEURON_TYPES = (LIFNeuron, StatelessNeuron)


def _count_meta(name, drop_norms=False, **kwargs):
    with torch.device("meta"):
        model = models.create_model(name, **kwargs)
        if drop_norms:
            model.drop_unused_norms()
        return models.count_parameters(model)


# ---------------------------------------------------------------- parameter counts
SPIKFORMER_CIFAR_PUBLISHED_MILLIONS = {"spikformer_4_384_cifar": 9.32, "spikformer_4_256_cifar": 4.15,
                                       "spikformer_2_384_cifar": 5.76}


@pytest.mark.parametrize("name", list(SPIKFORMER_CIFAR_PUBLISHED_MILLIONS))
def test_spikformer_cifar_parameter_count_matches_paper_without_the_unused_norms(name):
    # The paper's CIFAR-10 figures are the official code's counts without the never-called LayerNorms,
    # truncated (not rounded) to two decimals: 9.3247 -> 9.32, 4.1552 -> 4.15, 5.7651 -> 5.76.
    count = _count_meta(name, drop_norms=True)
    assert count // 10_000 / 100 == SPIKFORMER_CIFAR_PUBLISHED_MILLIONS[name]


@pytest.mark.parametrize("name", list(SPIKFORMER_CIFAR_PUBLISHED_MILLIONS))
@pytest.mark.xfail(strict=True, reason="with its two unused LayerNorms per block the official CIFAR code has "
                   "9.33/4.16/5.77 M parameters, rounded; the paper's 9.32/4.15/5.76 M are the counts without them, "
                   "truncated")
def test_spikformer_cifar_parameter_count_with_norms_rounds_to_paper(name):
    assert round(_count_meta(name) / 1e6, 2) == SPIKFORMER_CIFAR_PUBLISHED_MILLIONS[name]


@pytest.mark.parametrize("bipolar,plain", [("qkformer_bipolar_hst_4_384", "qkformer_hst_4_384"),
                                           ("qkformer_bipolar_hst_10_384", "qkformer_hst_10_384")])
def test_bipolar_qkformer_has_the_plain_qkformer_parameter_count(bipolar, plain):
    # BSA's projections have SSA's shapes, so HST-4-384 keeps the published 6.74 M (100 classes).
    assert _count_meta(bipolar) == _count_meta(plain)
    assert round(_count_meta("qkformer_bipolar_hst_4_384", num_classes=100) / 1e6, 2) == 6.74


def test_semm_port_configurations():
    with torch.device("meta"):
        cifar = models.semm_spikformer_4_384_cifar()
        imagenet = models.semm_spikformer_8_512()
    assert len(cifar.block) == 4 and len(imagenet.block) == 8
    c_attn, i_attn = cifar.block[0].attn, imagenet.block[0].attn
    assert (c_attn.num_experts, c_attn.expert_dim, c_attn.scale) == (4, 96, 0.125)
    assert (i_attn.num_experts, i_attn.expert_dim, i_attn.scale) == (4, 96, 1.0)
    assert cifar.block[0].mlp.hidden_dim == 4 * 384 and imagenet.block[0].mlp.hidden_dim == 512 // 3 * 16
    assert isinstance(c_attn.k_bn, torch.nn.BatchNorm1d) and isinstance(i_attn.k_bn, torch.nn.Identity)
    assert not any(".k_bn." in k or ".v_bn." in k for k in imagenet.state_dict())
    assert cifar.patch_embed.pooled == (False, False, True, True) and imagenet.patch_embed.pooled == (True,) * 4


# ---------------------------------------------------------------- official CIFAR Spikformer checkpoint
def _linear_bn(prefix, cin, cout):
    return {f"{prefix}_linear.weight": (cout, cin), f"{prefix}_linear.bias": (cout,), **_bn(prefix, cout)}


def official_spikformer_cifar_layout(embed, depth, num_classes, in_channels=3, mlp_ratio=4):
    """{key: shape} of the official Spikformer CIFAR code (cifar10/model.py), from its module names."""
    widths = (in_channels, embed // 8, embed // 4, embed // 2, embed)
    layout = {}
    for i, suffix in enumerate(("", "1", "2", "3")):
        layout[f"patch_embed.proj_conv{suffix}.weight"] = (widths[i + 1], widths[i], 3, 3)
        layout.update({k.replace("proj_bn.", f"proj_bn{suffix}."): v
                       for k, v in _bn("patch_embed.proj", widths[i + 1]).items()})
    layout.update(_conv_bn("patch_embed.rpe", embed, embed, 3))
    for j in range(depth):
        for norm in ("norm1", "norm2"):
            layout.update({f"block.{j}.{norm}.weight": (embed,), f"block.{j}.{norm}.bias": (embed,)})
        for name in ("q", "k", "v", "proj"):
            layout.update(_linear_bn(f"block.{j}.attn.{name}", embed, embed))
        hidden = embed * mlp_ratio
        layout.update({**_linear_bn(f"block.{j}.mlp.fc1", embed, hidden), **_linear_bn(f"block.{j}.mlp.fc2", hidden, embed)})
    layout.update({"head.weight": (num_classes, embed), "head.bias": (num_classes,)})
    return layout


def test_official_spikformer_cifar_checkpoint_loads_and_counts_match():
    layout = official_spikformer_cifar_layout(384, 4, 10)
    model = models.spikformer_4_384_cifar(backend="torch")
    assert models.count_parameters(model) == _numel(layout)
    official = random_state(layout)
    spikformer_cifar.load_official_state_dict(model, {"state_dict": official})  # strict
    ours = model.state_dict()
    for key, ours_key in spikformer_cifar.official_key_map(official).items():
        assert torch.equal(ours[ours_key].flatten(), official[key].flatten()), key


def test_official_cifar_linear_acts_like_our_conv():
    """A Linear on token-major [T·B, N, C] (the official layout) equals our 1x1 conv on [T·B, C, N]."""
    torch.manual_seed(0)
    model = spikformer_cifar.spikformer_cifar(embed_dim=32, depth=1, num_heads=2, T=1, backend="torch")
    conv = model.block[0].attn.q.conv
    linear = torch.nn.Linear(32, 32)
    linear.load_state_dict({"weight": conv.weight.squeeze(-1), "bias": conv.bias})
    x = torch.rand(3, 32, 5)
    torch.testing.assert_close(conv(x), linear(x.transpose(1, 2)).transpose(1, 2))


# ---------------------------------------------------------------- tiny configurations on every backend
def tiny_spikformer_cifar(backend):
    return spikformer_cifar.spikformer_cifar(embed_dim=32, depth=1, num_heads=1, T=2, backend=backend)


def excite(model):
    """Every neuron fires often enough that a silent branch cannot hide a difference: BN gains of 3 (fresh BNs
    give unit-variance drive, ~2% firing at T=2) and 4x stronger K/V convs where no BN follows them."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.fill_(3.0)
            if isinstance(m, EMSA) and isinstance(m.k_bn, torch.nn.Identity):
                m.k_conv.weight.mul_(4), m.v_conv.weight.mul_(4)
    return model


def tiny_semm(backend, imagenet=False):
    # scale 1: with 2x2 tokens and d_e = 8 the port's 0.125 leaves the expert neurons silent
    port = dict(kv_norm=False, hidden_dim=32 // 3 * 16) if imagenet else {}
    return excite(semm.semm_spikformer(embed_dim=32, depth=1, imagenet=imagenet, num_classes=10, T=2, num_experts=2,
                                       expert_dim=8, scale=1.0, backend=backend, **port))


def tiny_qkformer_bipolar(backend, norm="shiftmax"):
    # Shiftmax rows sum to at most 1 and its power-of-two denominator halves the top weight, so P·V rarely
    # reaches the default 0.5 threshold in two steps: 0.25 keeps the attention neuron active.
    return excite(qkformer_bipolar.qkformer_bipolar(attention_norm=norm, attention_threshold=0.25, T=2, num_classes=10,
                                                    embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=False,
                                                    backend=backend))


TINY = {
    "spikformer_cifar": (lambda b: excite(tiny_spikformer_cifar(b)), (2, 3, 16, 16)),
    "semm_cifar": (tiny_semm, (2, 3, 8, 8)),
    "semm_imagenet": (lambda b: tiny_semm(b, imagenet=True), (2, 3, 32, 32)),
    "qkformer_bipolar_shiftmax": (tiny_qkformer_bipolar, (2, 3, 8, 8)),
    "qkformer_bipolar_softmax": (lambda b: tiny_qkformer_bipolar(b, "softmax"), (2, 3, 8, 8)),
}
# The interpreted Triton runs are slow on CPU: one model per fused attention operator runs by default.
TRITON_BY_DEFAULT = {"semm_cifar", "qkformer_bipolar_shiftmax"}
PARITY_CASES = [pytest.param(kind, backend.values[0], id=f"{kind}-{backend.id}", marks=[
    *backend.marks, *([pytest.mark.slow] if backend.values[0] == "triton" and kind not in TRITON_BY_DEFAULT else [])])
    for kind in TINY for backend in FUSED_BACKENDS]


@pytest.mark.parametrize("kind,backend", PARITY_CASES)
def test_backends_agree_spike_for_spike(kind, backend):
    build, shape = TINY[kind]
    torch.manual_seed(0)
    reference, fused = build("torch"), build(backend)
    fused.load_state_dict(reference.state_dict())
    x = torch.rand(shape) * 2
    ref_logits, ref_spikes, ref_grads = run_recording(reference, x, NEURON_TYPES)
    device = BACKEND_DEVICE[backend]
    try:
        logits, spikes, grads = run_recording(fused.to(device), x.to(device), NEURON_TYPES)
    except NotImplementedError as missing:  # a fused operator not in this build
        pytest.skip(str(missing))
    assert len(spikes) == len(ref_spikes) > 0
    for i, (a, b) in enumerate(zip(ref_spikes, spikes)):
        assert torch.equal(a, b), f"neuron call {i}: spikes differ"
    silent = [i for i, s in enumerate(spikes) if s.abs().sum() == 0]
    assert not silent, f"neuron calls {silent} are silent: the comparison proves little there"
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_bipolar_qkformer_stage3_emits_ternary_qk_and_norms_differ():
    torch.manual_seed(0)
    shiftmax = tiny_qkformer_bipolar("torch")
    softmax = tiny_qkformer_bipolar("torch", "softmax")
    softmax.load_state_dict(shiftmax.state_dict())
    attn = shiftmax.stage3[0].attn
    assert isinstance(attn, BipolarSelfAttention) and isinstance(attn.q_lif, StatelessNeuron)
    q_spikes = []
    hook = attn.q_lif.register_forward_hook(lambda mod, inp, out: q_spikes.append(out))
    x = torch.rand(2, 3, 8, 8) * 2
    with torch.no_grad():
        out_shift, out_soft = shiftmax(x), softmax(x)
    hook.remove()
    values = set(q_spikes[0].unique().tolist())
    assert values <= {-1.0, 0.0, 1.0} and -1.0 in values
    assert not torch.equal(out_shift, out_soft)


# ---------------------------------------------------------------- statelessness, arguments, backend switch
@pytest.mark.parametrize("kind", ["semm_cifar", "qkformer_bipolar_shiftmax"])
def test_forward_keeps_no_state_between_calls(kind):
    build, shape = TINY[kind]
    torch.manual_seed(0)
    model = build("torch").eval()
    x, other = torch.rand(shape) * 2, torch.rand(shape) * 2
    with torch.no_grad():
        first = model(x)
        model(other)
        assert torch.equal(model(x), first)
    wrapped = [m.neuron for m in model.modules() if isinstance(m, StatelessNeuron)]
    assert wrapped and all(not isinstance(n.v, torch.Tensor) for n in wrapped)


def test_make_stateless_keeps_parameter_names_and_wraps_every_neuron():
    block = EMSP(16, backend="torch")
    names = list(block.state_dict())
    make_stateless(block)
    assert list(block.state_dict()) == names
    assert {name for name, m in block.named_modules() if isinstance(m, StatelessNeuron)} == {
        "fc1_lif", "gate_lif", "fc2_lif"}
    with pytest.raises(TypeError, match="neuron"):
        StatelessNeuron(torch.nn.ReLU())


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="attention_norm"):
        models.qkformer_bipolar_hst_4_384(attention_norm="none")
    with pytest.raises(ValueError, match="backend"):
        models.semm_spikformer_4_384_cifar(backend="gpu")
    with pytest.raises(ValueError, match="T"):
        models.spikformer_4_384_cifar(T=0)
    with pytest.raises(ValueError, match="num_experts"):
        semm.SEMMBlock(32, num_experts=0)


@pytest.mark.parametrize("kind", ["semm_cifar", "qkformer_bipolar_shiftmax"])
def test_set_backend_switches_every_spikeops_call(kind):
    model = TINY[kind][0]("torch")
    models.set_backend(model, "cpu")
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"cpu"}
    assert isinstance(next(m for m in model.modules() if isinstance(m, (EMSA, BipolarSelfAttention))).backend, str)


def test_eval_mode_runs_after_batch_norm_calibration():
    torch.manual_seed(0)
    model = tiny_semm("torch")
    x = torch.rand(2, 3, 8, 8) * 2
    calibrate_batch_norm(model, x)
    model.eval()
    with torch.no_grad():
        assert model(x).abs().sum() > 0


# ---------------------------------------------------------------- training smoke
@pytest.mark.parametrize("kind", ["spikformer_cifar", "semm_cifar", "qkformer_bipolar_shiftmax"])
def test_a_few_steps_reduce_the_loss(kind):
    torch.manual_seed(0)
    model = TINY[kind][0]("cpu")
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 3, 8, 8, generator=g) * 2, torch.arange(4) % 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.slow  # Dynamo + AOTAutograd tracing: ~30 s of CPU here
def test_torch_compile_matches_eager_through_the_stateless_wrappers():
    # StatelessNeuron resets a module attribute around each call; Dynamo must replay that, not bake in a membrane.
    torch.manual_seed(0)
    eager, compiled_model = tiny_semm("cpu"), tiny_semm("cpu")
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend="aot_eager")  # no inductor C++ build on this CPU
    x = torch.rand(2, 3, 8, 8) * 2
    for _ in range(2):
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
    compiled(x).square().sum().backward()
    assert all(p.grad is not None for p in compiled_model.block[0].attn.parameters())
