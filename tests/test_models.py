"""Reference backbones (spikeops.models): published parameter counts, official checkpoint layouts, the same
spikes/logits/gradients on every backend, and SpikingJelly 2.0's own definitions with weights copied across."""
import pytest
import torch

from spikeops import models
from spikeops.models import qkformer, spikformer
from spikeops.models.attention import SpikingSelfAttention
from spikeops.models.layers import LIFNeuron

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

# ---------------------------------------------------------------- parameter counts
PUBLISHED_MILLIONS = {
    # QKFormer paper Table (ImageNet) and CIFAR-100 HST-4-384 (the 6.74 M figure counts a 100-class head).
    ("qkformer_hst_10_384", 1000): 16.47,
    ("qkformer_hst_10_512", 1000): 29.08,
    ("qkformer_hst_10_768", 1000): 64.96,
    ("qkformer_hst_4_384", 100): 6.74,
}
SPIKFORMER_PUBLISHED_MILLIONS = {"spikformer_8_384": 16.81, "spikformer_8_512": 29.68, "spikformer_8_768": 66.34}


def _count_meta(name, **kwargs):
    with torch.device("meta"):
        return models.count_parameters(models.create_model(name, **kwargs))


@pytest.mark.parametrize("name,num_classes", list(PUBLISHED_MILLIONS))
def test_qkformer_parameter_count_matches_paper(name, num_classes):
    count = _count_meta(name, num_classes=num_classes)
    assert round(count / 1e6, 2) == PUBLISHED_MILLIONS[name, num_classes]


@pytest.mark.parametrize("name", list(SPIKFORMER_PUBLISHED_MILLIONS))
@pytest.mark.xfail(strict=True, reason="the official Spikformer code (imagenet/model.py) has 16.83/29.71/66.36 M "
                   "parameters (16.82/29.69/66.34 M without its unused LayerNorms); no subset of its parameter "
                   "groups gives the paper's 16.81/29.68/66.34 M")
def test_spikformer_parameter_count_matches_paper(name):
    assert round(_count_meta(name) / 1e6, 2) == SPIKFORMER_PUBLISHED_MILLIONS[name]


# ---------------------------------------------------------------- official checkpoint layouts
def _conv(prefix, cin, cout, k, dims=2, bias=False):
    out = {f"{prefix}_conv.weight": (cout, cin) + (k,) * dims}
    if bias:
        out[f"{prefix}_conv.bias"] = (cout,)
    return out


def _bn(prefix, c):
    return {f"{prefix}_bn.weight": (c,), f"{prefix}_bn.bias": (c,), f"{prefix}_bn.running_mean": (c,),
            f"{prefix}_bn.running_var": (c,), f"{prefix}_bn.num_batches_tracked": ()}


def _conv_bn(prefix, cin, cout, k=1, dims=2, bias=False):
    return {**_conv(prefix, cin, cout, k, dims, bias), **_bn(prefix, cout)}


def _official_attention(prefix, dim, names):
    out = {}
    for n in names:
        out.update(_conv_bn(f"{prefix}.{n}", dim, dim, 1, dims=1))
    out.update(_conv_bn(f"{prefix}.proj", dim, dim, 1, dims=1, bias=True))
    return out


def _official_mlp(prefix, dim, ratio, names):
    hidden = int(dim * ratio)
    return {**_conv_bn(f"{prefix}.{names[0]}", dim, hidden, 1, bias=True),
            **_conv_bn(f"{prefix}.{names[1]}", hidden, dim, 1, bias=True)}


def official_qkformer_layout(embed, depths, imagenet, num_classes, in_channels=3, mlp_ratio=4):
    """{key: shape} of the official QKFormer code (imagenet/qkformer.py or cifar10/model.py), written from
    its module names, independently of spikeops.models."""
    e1, e2, e3 = embed // 4, embed // 2, embed
    layout = {**_conv_bn("patch_embed1.proj", in_channels, e1 // 2, 3), **_conv_bn("patch_embed1.proj1", e1 // 2, e1, 3),
              **_conv_bn("patch_embed1.proj_res", e1 // 2, e1, 1)}
    if imagenet:
        layout.update(_conv_bn("patch_embed1.proj2", e1, e1, 3))
    for i, e in ((2, e2), (3, e3)):
        layout.update({**_conv_bn(f"patch_embed{i}.proj3", e // 2, e, 3), **_conv_bn(f"patch_embed{i}.proj4", e, e, 3),
                       **_conv_bn(f"patch_embed{i}.proj_res", e // 2, e, 1)})
    mlp_names = ("fc1", "fc2") if imagenet else ("mlp1", "mlp2")
    for stage, (e, depth) in enumerate(zip((e1, e2, e3), depths), start=1):
        for j in range(depth):
            if stage < 3:
                layout.update(_official_attention(f"stage{stage}.{j}.tssa", e, ("q", "k")))
            else:
                layout.update(_official_attention(f"stage3.{j}.{'attn' if imagenet else 'ssa'}", e, ("q", "k", "v")))
            layout.update(_official_mlp(f"stage{stage}.{j}.mlp", e, mlp_ratio, mlp_names))
    layout.update({"head.weight": (num_classes, embed), "head.bias": (num_classes,)})
    return layout


def official_spikformer_layout(embed, depth, num_classes, in_channels=3, mlp_ratio=4):
    """{key: shape} of the official Spikformer ImageNet code (imagenet/model.py)."""
    widths = (in_channels, embed // 8, embed // 4, embed // 2, embed)
    layout = {}
    for i, suffix in enumerate(("", "1", "2", "3")):
        layout.update({f"patch_embed.proj_conv{suffix}.weight": (widths[i + 1], widths[i], 3, 3)})
        layout.update({k.replace("proj_bn.", f"proj_bn{suffix}."): v for k, v in _bn("patch_embed.proj", widths[i + 1]).items()})
    layout.update(_conv_bn("patch_embed.rpe", embed, embed, 3))
    for j in range(depth):
        for norm in ("norm1", "norm2"):
            layout.update({f"block.{j}.{norm}.weight": (embed,), f"block.{j}.{norm}.bias": (embed,)})
        layout.update(_official_attention(f"block.{j}.attn", embed, ("q", "k", "v")))
        layout.update(_official_mlp(f"block.{j}.mlp", embed, mlp_ratio, ("fc1", "fc2")))
    layout.update({"head.weight": (num_classes, embed), "head.bias": (num_classes,)})
    return layout


def random_state(layout):
    g = torch.Generator().manual_seed(1)
    return {k: (torch.randint(0, 100, (), generator=g) if s == () else torch.rand(s, generator=g) + 0.1)
            for k, s in layout.items()}


def _numel(layout):
    return sum(torch.Size(s).numel() for k, s in layout.items() if "running" not in k and "num_batches" not in k)


LAYOUT_CASES = [
    ("qkformer_hst_10_384", dict(), lambda: official_qkformer_layout(384, (1, 2, 7), True, 1000)),
    ("qkformer_hst_10_768", dict(), lambda: official_qkformer_layout(768, (1, 2, 7), True, 1000)),
    ("qkformer_hst_4_384", dict(num_classes=100), lambda: official_qkformer_layout(384, (1, 1, 2), False, 100)),
    ("spikformer_8_384", dict(), lambda: official_spikformer_layout(384, 8, 1000)),
    ("spikformer_8_512", dict(), lambda: official_spikformer_layout(512, 8, 1000)),
]


@pytest.mark.parametrize("name,kwargs,layout_fn", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_official_checkpoint_layout_loads_and_counts_match(name, kwargs, layout_fn):
    layout = layout_fn()
    model = models.create_model(name, backend="torch", **kwargs)
    assert models.count_parameters(model) == _numel(layout)
    official = random_state(layout)
    checkpoint = {"model": {f"module.{k}": v for k, v in official.items()}}  # DDP-saved training checkpoint
    loader = qkformer if name.startswith("qkformer") else spikformer
    loader.load_official_state_dict(model, checkpoint)  # strict: every key mapped, none left over
    ours = model.state_dict()
    for key, ours_key in loader.official_key_map(official).items():
        assert torch.equal(ours[ours_key], official[key]), key


def test_official_checkpoint_shape_mismatch_names_the_key():
    model = models.qkformer_hst_4_384(num_classes=100, backend="torch")
    state = random_state(official_qkformer_layout(384, (1, 1, 2), False, 10))
    with pytest.raises(ValueError, match="head.weight"):
        qkformer.load_official_state_dict(model, state)


def test_spikformer_without_norms_skips_their_checkpoint_entries():
    model = spikformer.Spikformer(embed_dim=64, num_heads=4, depth=2, num_classes=10, backend="torch")
    model.drop_unused_norms()
    spikformer.load_official_state_dict(model, random_state(official_spikformer_layout(64, 2, 10)))
    assert not any("norm" in k for k in model.state_dict())


# ---------------------------------------------------------------- tiny configurations for forward/backward
def tiny_qkformer_cifar(backend, faithful=False):
    return qkformer.QKFormer(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=False,
                             faithful=faithful, backend=backend)


def tiny_qkformer_imagenet(backend, faithful=False):
    return qkformer.QKFormer(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=True,
                             faithful=faithful, backend=backend)


def tiny_spikformer(backend):
    return spikformer.Spikformer(T=2, num_classes=10, embed_dim=32, num_heads=2, depth=1, backend=backend)


TINY = {
    "qkformer_cifar": (tiny_qkformer_cifar, (2, 3, 16, 16)),
    "qkformer_imagenet": (tiny_qkformer_imagenet, (2, 3, 32, 32)),
    "qkformer_imagenet_faithful": (lambda b: tiny_qkformer_imagenet(b, faithful=True), (2, 3, 32, 32)),
    "spikformer": (tiny_spikformer, (2, 3, 32, 32)),
}


def calibrate_batch_norm(model, x):
    """Running statistics from ``x`` so that eval mode is not silent (fresh BNs would pass raw conv outputs)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    with torch.no_grad():
        model(x)


def run_recording(model, x, neuron_types=(LIFNeuron,)):
    """Logits, every neuron's spikes (in call order) and parameter gradients after one backward."""
    spikes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: spikes.append(out.detach().cpu()))
             for m in model.modules() if isinstance(m, neuron_types)]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    (logits * torch.linspace(-1, 1, logits.numel(), device=logits.device).view_as(logits)).sum().backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach().cpu(), spikes, grads


def _reference_and_fused(kind, backend):
    build, shape = TINY[kind]
    torch.manual_seed(0)
    reference = build("torch")
    fused = build(backend)
    fused.load_state_dict(reference.state_dict())
    x = torch.rand(shape) * 2
    return reference, fused, x


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("kind", list(TINY))
def test_backends_agree_spike_for_spike(kind, backend):
    reference, fused, x = _reference_and_fused(kind, backend)
    ref_logits, ref_spikes, ref_grads = run_recording(reference, x)
    device = BACKEND_DEVICE[backend]
    try:
        logits, spikes, grads = run_recording(fused.to(device), x.to(device))
    except NotImplementedError as missing:  # a fused attention operator not in this build yet
        pytest.skip(str(missing))
    assert len(spikes) == len(ref_spikes) > 0
    for i, (a, b) in enumerate(zip(ref_spikes, spikes)):
        assert torch.equal(a, b), f"neuron call {i}: spikes differ"
    assert sum(s.sum() for s in spikes) > 0, "a silent network proves nothing"
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_faithful_proj_lif_leaks_across_the_batch_only_when_faithful():
    """The official SSA proj_lif integrates over T·B: a sample's output then depends on the samples before it."""
    torch.manual_seed(0)
    paper = SpikingSelfAttention(16, 2, backend="torch")
    faithful = SpikingSelfAttention(16, 2, backend="torch", proj_lif_over_batch=True)
    with torch.no_grad():
        for conv in (paper.q.conv, paper.k.conv, paper.v.conv, paper.proj.conv):
            conv.weight.mul_(4)  # fresh eval-mode BNs are identities: strengthen the drive so neurons fire
    faithful.load_state_dict(paper.state_dict())
    paper.eval(), faithful.eval()
    x = (torch.rand(2, 4, 16, 6, 6) < 0.5).float() * 2  # [T, B, C, H, W]
    with torch.no_grad():
        assert paper(x).sum() > 0
        assert torch.equal(paper(x)[:, 2:], paper(x[:, 2:]))
        # T·B is one "time" axis (t0b0, t0b1, .., t1b0, ..): only its very first entry starts from rest
        assert torch.equal(faithful(x)[0, 0], faithful(x[:, :1])[0, 0])
        assert not torch.equal(faithful(x)[:, 2:], faithful(x[:, 2:]))


def test_unknown_backend_and_bad_input_are_rejected():
    with pytest.raises(ValueError, match="backend"):
        models.qkformer_hst_4_384(backend="gpu")
    with pytest.raises(ValueError, match="T"):
        models.spikformer_8_384(T=0)
    with pytest.raises(ValueError, match="name"):
        models.create_model("resnet50")
    model = tiny_qkformer_cifar("torch")
    with pytest.raises(ValueError, match="x: expected an image batch"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="T=2"):
        model(torch.rand(3, 2, 3, 16, 16))


def test_set_backend_switches_every_spikeops_call():
    model = tiny_qkformer_cifar("torch")
    models.set_backend(model, "cpu")
    backends = {m.backend for m in model.modules() if hasattr(m, "backend")}
    assert backends == {"cpu"}


# ---------------------------------------------------------------- SpikingJelly 2.0's definitions
def _cat(state, prefix, parts, suffix):
    return torch.cat([state[f"{prefix}.{p}.{suffix}"] for p in parts])


def _sj_attention(ours, prefix, parts, fused_name):
    out = {}
    for stat in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{fused_name}.1.{stat}"] = _cat(ours, prefix, parts, f"bn.{stat}")
    out[f"{prefix}.{fused_name}.1.num_batches_tracked"] = ours[f"{prefix}.{parts[0]}.bn.num_batches_tracked"]
    out[f"{prefix}.{fused_name}.0.weight"] = _cat(ours, prefix, parts, "conv.weight")
    out[f"{prefix}.proj_conv_bn.0.weight"] = ours[f"{prefix}.proj.conv.weight"]
    for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{prefix}.proj_conv_bn.1.{stat}"] = ours[f"{prefix}.proj.bn.{stat}"]
    return out


def _sj_conv_bn(ours, ours_prefix, conv_key, bn_key):
    out = {conv_key + ".weight": ours[f"{ours_prefix}.conv.weight"]}
    out[conv_key + ".bias"] = torch.zeros(out[conv_key + ".weight"].shape[0])  # ours (the official) has no bias
    for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{bn_key}.{stat}"] = ours[f"{ours_prefix}.bn.{stat}"]
    return out


def _sj_mlp(ours, prefix):
    out = {}
    for i in (1, 2):
        out[f"{prefix}.fc{i}.weight"] = ours[f"{prefix}.fc{i}.conv.weight"].squeeze(-1)
        out[f"{prefix}.fc{i}.bias"] = ours[f"{prefix}.fc{i}.conv.bias"]
        for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{prefix}.bn{i}.{stat}"] = ours[f"{prefix}.fc{i}.bn.{stat}"]
    return out


def spikingjelly_qkformer_state(model):
    """Our QKFormer (ImageNet layout) weights in SpikingJelly 2.0's QKFormer key layout. Definition
    differences: SpikingJelly's patch-embedding convs carry a bias (set to 0 here; the official convs have
    none), its attention proj conv has none (ours, like the official, is zeroed before comparing), Q/K(/V)
    are one fused conv + BN (the concatenation of ours), its MLP is Conv1d (our Conv2d 1x1 squeezed)."""
    ours = model.state_dict()
    sj = {}
    names = {"patch_embed1": ("conv1", "conv2", "conv3"), "patch_embed2": ("conv1", "conv2"),
             "patch_embed3": ("conv1", "conv2")}
    for embed, convs in names.items():
        for i, conv in enumerate(convs, start=1):
            sj.update(_sj_conv_bn(ours, f"{embed}.{conv}", f"{embed}.conv{i}", f"{embed}.bn{i}"))
        sj.update(_sj_conv_bn(ours, f"{embed}.shortcut", f"{embed}.shortcut.0", f"{embed}.shortcut.1"))
    for stage, parts, fused_name in (("stage1", ("q", "k"), "qk_conv_bn"), ("stage2", ("q", "k"), "qk_conv_bn"),
                                     ("stage3", ("q", "k", "v"), "qkv_conv_bn")):
        for j in range(len(getattr(model, stage))):
            sj.update(_sj_attention(ours, f"{stage}.{j}.attn", parts, fused_name))
            sj.update(_sj_mlp(ours, f"{stage}.{j}.mlp"))
    sj["head.weight"], sj["head.bias"] = ours["head.weight"], ours["head.bias"]
    return sj


def _zero_attention_proj_bias(model):
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "proj") and hasattr(m.proj, "conv") and m.proj.conv.bias is not None:
                m.proj.conv.bias.zero_()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_qkformer_matches_spikingjelly(train):
    sj_qkformer = pytest.importorskip("spikingjelly.activation_based.model.qkformer")
    sj_functional = pytest.importorskip("spikingjelly.activation_based.functional")
    torch.manual_seed(0)
    ours = tiny_qkformer_imagenet("torch")
    _zero_attention_proj_bias(ours)
    # detach_reset=True makes SpikingJelly's patch-embedding/MLP neurons match the official ones too.
    theirs = sj_qkformer.QKFormer(T=2, num_classes=10, embed_dims=32, num_heads=(2, 2, 2), depths=(1, 1, 1),
                                  detach_reset=True)
    x = torch.rand(2, 3, 32, 32) * 2
    calibrate_batch_norm(ours, x)
    theirs.load_state_dict(spikingjelly_qkformer_state(ours), strict=True)
    ours.train(train), theirs.train(train)
    x_ours, x_theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours_logits, theirs_logits = ours(x_ours), theirs(x_theirs)
    sj_functional.reset_net(theirs)
    assert ours_logits.abs().sum() > 0
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=1e-5, atol=1e-5)
    ours_logits.square().sum().backward()
    theirs_logits.square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-6)


def test_spikformer_block_matches_spikingjelly():
    """SpikingJelly's Spikformer differs from the official one in its patch stem (max-pool before the LIF,
    not after) and returns per-step logits, so the comparison is block by block: the encoder block (SSA +
    MLP) with the same weights gives the same output (its MLP convs have no bias: ours are zeroed)."""
    sj_spikformer = pytest.importorskip("spikingjelly.activation_based.model.spikformer")
    torch.manual_seed(0)
    ours = spikformer.SpikformerBlock(32, 2, 4.0, backend="torch")
    _zero_attention_proj_bias(ours)
    with torch.no_grad():
        ours.mlp.fc1.conv.bias.zero_(), ours.mlp.fc2.conv.bias.zero_()
    theirs = sj_spikformer.SpikformerBlock(32, 2, 4.0, detach_reset=True)
    state = ours.state_dict()
    sj = _sj_attention(state, "attn", ("q", "k", "v"), "qkv_conv_bn")
    for i in (1, 2):
        sj[f"mlp.fc{i}.0.weight"] = state[f"mlp.fc{i}.conv.weight"].squeeze(-1)
        for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            sj[f"mlp.fc{i}.1.{stat}"] = state[f"mlp.fc{i}.bn.{stat}"]
    theirs.load_state_dict(sj, strict=True)
    x = (torch.rand(2, 2, 32, 4, 4) < 0.3).float() * 2
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
