"""Attention blocks against SpikingJelly 2.0's layers with the same weights.

Definition differences found (documented in spikeops/attention.py and the README):
  * SpikingJelly fuses the Q/K(/V) 1x1 convs and BNs into one conv with 2C (3C) outputs; the official
    models (and spikeops) keep separate q_conv/k_conv/v_conv. Same numbers after splitting the weights.
  * SpikingJelly's TokenQKAttention / ChannelQKAttention / SpikingSelfAttention have a bias-free output
    projection; the official QKFormer and Spikformer proj_conv has a bias. Tests zero spikeops' bias.
  * SpikingJelly's SpikingSelfAttention evaluates (V K^T) Q on [d, N] tensors: Q (K^T V) transposed.
"""
import pytest
import torch

import spikeops
from spikeops.attention import ChannelQKAttention, SpikeDrivenSelfAttention, SpikingSelfAttention, TokenQKAttention

sj_attention = pytest.importorskip("spikingjelly.activation_based.layer.attention")

T, B, C, H, W, HEADS = 3, 2, 8, 3, 3, 2


def copy_fused_projection(ours, sj_container, names):
    """Split SpikingJelly's fused conv+BN (len(names)*C outputs) into spikeops' per-name convs and BNs."""
    conv, bn = sj_container[0], sj_container[1]
    for i, name in enumerate(names):
        rows = slice(i * C, (i + 1) * C)
        getattr(ours, f"{name}_conv").weight.data.copy_(conv.weight.data[rows])
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(getattr(ours, f"{name}_bn"), attr).data.copy_(getattr(bn, attr).data[rows])


def copy_output_projection(ours, sj_container):
    ours.proj_conv.weight.data.copy_(sj_container[0].weight.data)
    ours.proj_conv.bias.data.zero_()
    ours.proj_bn.load_state_dict(sj_container[1].state_dict())


def randomise(module, generator):
    """Non-trivial weights so that every neuron sometimes fires and sometimes does not."""
    for p in module.parameters():
        p.data.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.7 + 0.2)


def compare(ours, sj, x_ours, x_sj, reshape_out):
    x_ours = x_ours.clone().requires_grad_(True)
    x_sj = x_sj.clone().requires_grad_(True)
    out_ours = ours(x_ours)
    out_sj = reshape_out(sj(x_sj))
    assert out_sj.abs().sum() > 0, "the block must produce activity for the comparison to mean anything"
    torch.testing.assert_close(out_ours, out_sj, atol=1e-10, rtol=1e-10)
    weight = torch.randn(out_sj.shape, generator=torch.Generator().manual_seed(2), dtype=out_sj.dtype)
    (g_ours,) = torch.autograd.grad((out_ours * weight).sum(), x_ours)
    (g_sj,) = torch.autograd.grad((out_sj * weight).sum(), x_sj)
    torch.testing.assert_close(g_ours, g_sj.reshape(g_ours.shape), atol=1e-9, rtol=1e-7)


def spikes(shape, generator):
    return (torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5).double()


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("ours_cls, sj_name", [(TokenQKAttention, "TokenQKAttention"),
                                               (ChannelQKAttention, "ChannelQKAttention")])
def test_qk_attention_matches_spikingjelly(backend, ours_cls, sj_name):
    g = torch.Generator().manual_seed(0)
    sj = getattr(sj_attention, sj_name)(C, HEADS).double()
    randomise(sj, g)
    ours = ours_cls(C, HEADS, backend=backend).double()
    copy_fused_projection(ours, sj.qk_conv_bn, ("q", "k"))
    copy_output_projection(ours, sj.proj_conv_bn)
    x = spikes((T, B, C, H, W), g)
    compare(ours, sj, x, x.flatten(3), lambda y: y.reshape(T, B, C, H, W))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_ssa_matches_spikingjelly(backend):
    g = torch.Generator().manual_seed(1)
    sj = sj_attention.SpikingSelfAttention(C, HEADS).double()
    randomise(sj, g)
    ours = SpikingSelfAttention(C, HEADS, backend=backend).double()
    copy_fused_projection(ours, sj.qkv_conv_bn, ("q", "k", "v"))
    copy_output_projection(ours, sj.proj_conv_bn)
    x = spikes((T, B, C, H, W), g)
    compare(ours, sj, x, x.flatten(3), lambda y: y.reshape(T, B, C, H, W))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_sdsa_matches_spikingjelly(backend):
    g = torch.Generator().manual_seed(2)
    sj = sj_attention.SpikeDrivenSelfAttention(C, HEADS).double()
    randomise(sj, g)
    ours = SpikeDrivenSelfAttention(C, HEADS, backend=backend).double()
    ours.load_state_dict(sj.state_dict())  # same module names and parameter layout
    x = torch.randn((T, B, C, H, W), generator=g, dtype=torch.float64) + 0.8
    compare(ours, sj, x, x, lambda y: y)


def test_official_state_dict_names():
    """Official checkpoints load: the parameter names are the official models'."""
    keys = set(TokenQKAttention(C, HEADS).state_dict())
    assert {"q_conv.weight", "k_bn.running_var", "proj_conv.bias", "proj_bn.weight"} <= keys
    keys = set(SpikingSelfAttention(C, HEADS).state_dict())
    assert {"v_conv.weight", "v_bn.bias", "proj_conv.bias"} <= keys


def test_reset_returns_neurons_to_rest():
    block = TokenQKAttention(C, HEADS, backend="cpu")
    block(torch.ones(T, B, C, H, W))
    assert isinstance(block.q_lif.v, torch.Tensor)
    block.reset()
    assert block.q_lif.v == 0.0


def test_module_errors():
    with pytest.raises(ValueError, match="num_heads: must divide dim=8"):
        TokenQKAttention(8, 3)
    with pytest.raises(ValueError, match=r"x: expected \[T, B, C=8, H, W\]"):
        SpikingSelfAttention(8, 2)(torch.zeros(2, 1, 4, 3, 3))
    with pytest.raises(ValueError, match="form: expected"):
        SpikeDrivenSelfAttention(8, 2, form="xor")


def test_exported_from_package():
    assert spikeops.TokenQKAttention is TokenQKAttention
    assert spikeops.ops.attention.qk_token_attention is not None
