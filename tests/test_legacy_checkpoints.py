"""Official checkpoints: QKFormer's loader puts the model in the official stage-3 behaviour (or refuses), and
STEP's SEMM checkpoints load into spikeops' SEMM-Spikformer with their biases folded into BatchNorm."""
import pytest
import torch
import torch.nn.functional as F

from spikeops.models import qkformer, qkformer_bipolar, semm
from spikeops.models.attention import SpikingSelfAttention

from test_models import official_qkformer_layout, random_state


# ----------------------------------------------------------------------------------------------- QKFormer
def tiny_qkformer(faithful=False):
    return qkformer.QKFormer(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=True,
                             faithful=faithful, backend="torch")


def test_qkformer_official_checkpoint_switches_to_the_official_stage3():
    state = random_state(official_qkformer_layout(32, (1, 1, 1), True, 10))
    model = tiny_qkformer(faithful=False)
    qkformer.load_official_state_dict(model, {"model": state})
    assert model.faithful
    attn = [b.attn for b in model.stage3]
    assert attn and all(isinstance(a, SpikingSelfAttention) and a.proj_lif_over_batch for a in attn)
    reference = tiny_qkformer(faithful=True)
    qkformer.load_official_state_dict(reference, state)
    model.eval(), reference.eval()
    x = torch.rand(3, 3, 32, 32) * 2
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_qkformer_official_checkpoint_faithful_false_must_be_asked_for():
    state = random_state(official_qkformer_layout(32, (1, 1, 1), True, 10))
    model = tiny_qkformer(faithful=False)
    qkformer.load_official_state_dict(model, state, faithful=False)
    assert not model.faithful and not model.stage3[0].attn.proj_lif_over_batch


def test_qkformer_official_checkpoint_refused_when_stage3_is_not_ssa():
    model = qkformer_bipolar.qkformer_bipolar(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1),
                                              backend="torch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"stage3\.0\.attn is .*faithful=False"):
        qkformer.load_official_state_dict(model, random_state(official_qkformer_layout(32, (1, 1, 1), True, 10)))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


# ----------------------------------------------------------------------------------------------- STEP SEMM
def _bn(prefix, n, g):
    return {f"{prefix}.weight": torch.rand(n, generator=g) + 0.5, f"{prefix}.bias": torch.randn(n, generator=g),
            f"{prefix}.running_mean": torch.randn(n, generator=g), f"{prefix}.running_var": torch.rand(n, generator=g) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(7)}


def _neuron(prefix):
    # braincog: per-neuron threshold and the surrogate's alpha, both Parameters
    return {f"{prefix}.threshold": torch.tensor(1.0), f"{prefix}.act_fun.alpha": torch.tensor(4.0)}


def step_semm_cifar_state(C=32, depth=1, m=2, de=8, classes=10, seed=0):
    """A random state dict with the module names and shapes of STEP's ``spikf_semm_cifar`` (written from its
    module names: SPS proj_conv..3 / rpe, SSA k/v/proj_linear, router1-3, ff_list / lif_list, MLP fc1/dw/fc2)."""
    g = torch.Generator().manual_seed(seed)
    s = {}
    widths = (3, C // 8, C // 4, C // 2, C)
    for i, suffix in enumerate(("", "1", "2", "3")):
        s[f"patch_embed.proj_conv{suffix}.weight"] = torch.randn(widths[i + 1], widths[i], 3, 3, generator=g)
        s.update(_bn(f"patch_embed.proj_bn{suffix}", widths[i + 1], g))
        s.update(_neuron(f"patch_embed.proj_lif{suffix}"))
    s["patch_embed.rpe_conv.weight"] = torch.randn(C, C, 3, 3, generator=g)
    s.update(_bn("patch_embed.rpe_bn", C, g))
    s.update(_neuron("patch_embed.rpe_lif"))
    for j in range(depth):
        a = f"block.{j}.attn"
        for name, width in (("k", de), ("v", C)):
            s[f"{a}.{name}_linear.weight"] = torch.randn(width, C, generator=g)
            s[f"{a}.{name}_linear.bias"] = torch.randn(width, generator=g)
            s.update(_bn(f"{a}.{name}_bn", width, g))
            s.update(_neuron(f"{a}.{name}_lif"))
        s[f"{a}.proj_linear.weight"] = torch.randn(C, C, generator=g)
        s[f"{a}.proj_linear.bias"] = torch.randn(C, generator=g)
        s.update(_bn(f"{a}.proj_bn", C, g))
        s.update(_neuron(f"{a}.proj_lif"))
        s[f"{a}.router1.weight"] = torch.randn(m, C, generator=g)
        s[f"{a}.router1.bias"] = torch.randn(m, generator=g)
        s.update(_bn(f"{a}.router2", m, g))
        s.update(_neuron(f"{a}.router3"))
        for i in range(m):
            s[f"{a}.ff_list.{i}.unit_linear.weight"] = torch.randn(de, C, generator=g)
            s[f"{a}.ff_list.{i}.unit_linear.bias"] = torch.randn(de, generator=g)
            s.update(_bn(f"{a}.ff_list.{i}.unit_bn", de, g))
            s.update(_neuron(f"{a}.ff_list.{i}.unit_lif"))
            s.update(_neuron(f"{a}.lif_list.{i}"))
        p, h = f"block.{j}.mlp", 4 * C
        s[f"{p}.fc1_linear.weight"] = torch.randn(h, C, generator=g)
        s[f"{p}.fc1_linear.bias"] = torch.randn(h, generator=g)
        s.update(_bn(f"{p}.fc1_bn", h, g))
        s[f"{p}.dw_conv.weight"] = torch.randn(h // 2, 1, 3, 3, generator=g)
        s.update(_bn(f"{p}.dw_bn", h // 2, g))
        s[f"{p}.fc2_linear.weight"] = torch.randn(C, h // 2, generator=g)
        s[f"{p}.fc2_linear.bias"] = torch.randn(C, generator=g)
        s.update(_bn(f"{p}.fc2_bn", C, g))
        for n in ("fc1_lif", "dw_lif", "fc2_lif"):
            s.update(_neuron(f"{p}.{n}"))
    s["head.weight"] = torch.randn(classes, C, generator=g)
    s["head.bias"] = torch.randn(classes, generator=g)
    return s


def tiny_semm(**kwargs):
    return semm.semm_spikformer(embed_dim=32, depth=1, imagenet=False, num_classes=10, num_experts=2, expert_dim=8,
                                backend="torch", **kwargs)


def _bn_eval(y, state, prefix):
    return F.batch_norm(y, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"], state[f"{prefix}.weight"],
                        state[f"{prefix}.bias"], training=False)


def test_step_cifar_checkpoint_loads_strictly_and_folds_biases_exactly():
    state = step_semm_cifar_state()
    model = tiny_semm()
    with pytest.warns(UserWarning, match="token and expert axes swapped"):
        result = semm.load_step_state_dict(model, {"state_dict": {f"module.{k}": v for k, v in state.items()}})
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    attn, mlp = model.block[0].attn, model.block[0].mlp
    x = torch.randn(6, 32, 16)  # [T*B, C, N]
    # Linear(+bias) -> BN (the port, eval) equals spikeops' bias-free conv -> BN with the folded mean
    for name, bn, ours_conv, ours_bn in (("k_linear", "k_bn", attn.k_conv, attn.k_bn),
                                        ("v_linear", "v_bn", attn.v_conv, attn.v_bn),
                                        ("router1", "router2", attn.router_conv, attn.router_bn)):
        port = _bn_eval(F.conv1d(x, state[f"block.0.attn.{name}.weight"][..., None],
                                 state[f"block.0.attn.{name}.bias"]), state, f"block.0.attn.{bn}")
        with torch.no_grad():
            torch.testing.assert_close(ours_bn(ours_conv(x)), port, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        q = attn.q_bn(attn.q_conv(x))
    for i in range(2):  # expert i's query is channel block i of q
        port = _bn_eval(F.conv1d(x, state[f"block.0.attn.ff_list.{i}.unit_linear.weight"][..., None],
                                 state[f"block.0.attn.ff_list.{i}.unit_linear.bias"]), state,
                        f"block.0.attn.ff_list.{i}.unit_bn")
        torch.testing.assert_close(q[:, 8 * i:8 * (i + 1)], port, rtol=1e-5, atol=1e-5)
    # kept biases and the zero depthwise bias the port does not have
    assert torch.equal(attn.proj_conv.bias, state["block.0.attn.proj_linear.bias"])
    assert torch.equal(mlp.fc1_conv.weight[:, :, 0, 0], state["block.0.mlp.fc1_linear.weight"])
    assert torch.equal(mlp.gate_conv.bias, torch.zeros(64))
    assert torch.equal(model.patch_embed.conv4.conv.weight, state["patch_embed.proj_conv3.weight"])
    model(torch.rand(2, 3, 32, 32))  # and the loaded model runs


def test_step_checkpoint_refuses_another_threshold():
    state = step_semm_cifar_state()
    state["block.0.attn.k_lif.threshold"] = torch.tensor(0.5)
    with pytest.raises(ValueError, match=r"k_lif\.threshold.*fire at 1"):
        semm.step_state_dict_to_spikeops(state)


def test_step_imagenet_layout_drops_unused_kv_norms():
    # The ImageNet port: Conv1d layers (K, V and the expert queries without bias), k_bn / v_bn built but unused.
    g = torch.Generator().manual_seed(3)
    cifar = step_semm_cifar_state()
    state = {}
    for key, value in cifar.items():
        key = key.replace("_linear.", "_conv.").replace("unit_linear", "unit_conv")
        if key.endswith("_conv.weight") and value.dim() == 2:
            value = value[..., None] if ".attn." in key else value[..., None, None]
        if any(key.endswith(f"{n}_conv.bias") for n in (".k", ".v", "unit")):
            continue
        state[key] = value
    state["block.0.mlp.dw_conv.bias"] = torch.randn(64, generator=g)
    model = tiny_semm(kv_norm=False, scale=1.0)
    result = semm.load_step_state_dict(model, state)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.block[0].mlp.gate_conv.bias, state["block.0.mlp.dw_conv.bias"])
