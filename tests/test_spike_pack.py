"""Spikes kept as bits (spikeops.ops.spike_pack, spikeops.nn.packing; docs/memory.md).

The neurons here run on the "torch" reference backend and are marked by a forward hook (``_marked``), as the
neuron operators mark their outputs: packing depends on the marks and on what autograd saves, not on the
neuron's backend.
"""
from __future__ import annotations

import gc
import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import spikeops
from spikeops import multibit
from spikeops.nn import packing
from spikeops.ops import spike_pack as sp
from spikeops.ops.spike_pack import bits, naive
from spikeops.ops.spike_pack.hooks import PackedSpikes, _hooks_on_top
from spikeops.ops.spike_pack.registry import layout_of

from conftest import HAS_CUDA

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
KINDS = [("binary", None, None), ("ternary", None, None), ("integer", 1, None), ("integer", 4, None),
         ("integer", 4, 4.0), ("integer", 4, 2.0), ("integer", 7, 3.0), ("integer", 15, None), ("integer", 127, 3.0),
         ("integer", 255, None)]


def _spikes(shape, kind, levels=None, norm=None, dtype=torch.float32, device="cpu", p=0.3):
    if kind == "binary":
        v = (torch.rand(shape) < p).to(dtype)
    elif kind == "ternary":
        v = torch.randint(-1, 2, shape).to(dtype)
    else:
        v = torch.randint(0, levels + 1, shape).to(dtype)
    v = v.to(device)
    return v / norm if norm is not None else v


def _mark_output(kind, levels=None, norm=None):
    def hook(module, args, out):
        return sp.mark_spikes(out, kind, levels, norm=norm)
    return hook


def _marked(module, kind="binary", levels=None, norm=None):
    module.register_forward_hook(_mark_output(kind, levels, norm))
    return module


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _lif():
    return _marked(spikeops.LIF(step_mode="m", backend="torch"))


def _reset(model):
    for m in model.modules():
        if isinstance(m, spikeops.BaseNeuron):
            m.reset()


# ---------------------------------------------------------------- the bit format
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", bits.FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("kind,levels,norm", KINDS)
def test_round_trip_matches_reference(kind, levels, norm, dtype, device):
    for shape in [(3, 5, 7), (16,), (1,), (2, 0, 3)]:
        v = _spikes(shape, kind, levels, norm, dtype, device)
        before = v.clone()
        planes = bits.pack_values(v, kind, levels, norm)
        assert torch.equal(v, before), "packing must not modify its input"
        assert planes.dtype == torch.uint8 and planes.device == v.device
        assert planes.numel() == bits.bits_per_spike(kind, levels) * ((v.numel() + 7) // 8)
        assert torch.equal(planes.cpu(), naive.pack(v.cpu(), kind, levels, norm))
        back = bits.unpack_values(planes, v.numel(), dtype, kind, norm).view(shape)
        assert back.dtype == dtype and back.device == v.device and torch.equal(back, v)
        assert torch.equal(naive.unpack(planes.cpu(), shape, dtype, kind, levels, norm), v.cpu())


def test_bits_per_spike():
    assert bits.bits_per_spike("binary") == 1 and bits.bits_per_spike("ternary") == 2
    assert [bits.bits_per_spike("integer", D) for D in (1, 2, 3, 4, 7, 8, 127, 255)] == [1, 2, 2, 3, 3, 4, 7, 8]


def test_bad_kinds_are_refused():
    t = torch.zeros(4)
    for args, kwargs in [(("unary",), {}), (("integer",), {}), (("integer", 0), {}), (("integer", 256), {}),
                         (("integer", 2.5), {}), (("binary", 3), {}), (("ternary",), {"norm": 2.0}),
                         (("integer", 4), {"norm": 0.0}), (("integer", 4), {"norm": float("nan")})]:
        with pytest.raises(ValueError):
            sp.mark_spikes(t, *args, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", bits.FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("kind,levels,norm", [KINDS[0], KINDS[1], KINDS[4]])
def test_packed_view_rebuilt_with_its_layout(kind, levels, norm, dtype, device):
    base = _spikes((4, 6, 5, 3), kind, levels, norm, dtype, device).requires_grad_()
    with sp.pack_spikes():
        m = sp.mark_spikes(base * 1, kind, levels, norm=norm)
        views = {"itself": m, "flatten": m.flatten(0, 1), "permute": m.permute(0, 2, 3, 1),
                 "transpose": m.transpose(1, 3), "channels_last": m.contiguous(memory_format=torch.channels_last),
                 "slice": m[1:3], "gappy slice": m[:, 1:5:2, :, 1:], "select": m[2], "unsqueeze": m.unsqueeze(2)}
        for name, v in views.items():
            packed = sp.pack(v)
            if name == "channels_last":
                assert packed is None, "a copy is not a view of the spikes"
                continue
            assert isinstance(packed, PackedSpikes), name
            assert packed.nbytes == bits.bits_per_spike(kind, levels) * ((v.numel() + 7) // 8)
            back = packed.unpack()
            assert torch.equal(back, v) and back.dtype == v.dtype and back.device == v.device, name
            assert back.shape == v.shape and back.stride() == v.stride(), name


def test_layout_of():
    t = torch.zeros(4, 5, 6)
    assert layout_of(t) == "dense" and layout_of(t.permute(2, 0, 1)) == "dense" and layout_of(t[1:3]) == "dense"
    assert layout_of(t[:, 1:3]) == "gappy" and layout_of(t[..., ::2]) == "gappy"
    assert layout_of(t[:, :1].expand(4, 5, 6)) == "overlap"
    assert layout_of(torch.zeros(3, 1, 2).as_strided((3, 2), (1, 1))) == "overlap"


# ---------------------------------------------------------------- the registry
def test_marked_tensor_and_its_views_are_recognised():
    with sp.pack_spikes():
        x = torch.randn(2, 3, 4, 5, requires_grad=True)
        s = sp.mark_spikes((x > 0).float() * 1, "binary")
        for v in (s, s.view(6, 20), s.reshape(-1), s.flatten(0, 1), s.permute(3, 2, 1, 0), s.transpose(0, 1), s[1],
                  s[:, 1:], s[..., ::2], s.unsqueeze(0), s.squeeze(), s.narrow(2, 1, 2), s.unflatten(3, (5, 1))):
            assert sp.spike_info(v) == sp.SpikeInfo("binary", None, None)
        for v in (s.clone(), s.detach().clone(), s + 0, s.to(torch.float64), s.view(torch.int32), x):
            assert sp.spike_info(v) is None


def test_views_outside_the_marked_range_are_not_spikes():
    with sp.pack_spikes():
        big = torch.rand(100)
        s = sp.mark_spikes(big[:50].round(), "binary")  # a fresh tensor
        sp.mark_spikes(big[:50], "binary")  # pretend the first half of big holds spikes
        assert sp.spike_info(big[:50].view(5, 10)) is not None and sp.spike_info(big[10:20]) is not None
        assert sp.spike_info(big[40:60]) is None and sp.spike_info(big) is None and sp.spike_info(big[50:]) is None
        assert sp.spike_info(s) is not None


def test_in_place_modification_voids_the_mark():
    with sp.pack_spikes():
        s = sp.mark_spikes(torch.ones(4, 4), "binary")
        v = s.view(16)
        assert sp.spike_info(v) is not None
        s.mul_(2)
        assert sp.spike_info(s) is None and sp.spike_info(v) is None and sp.pack(v) is None
        s2 = sp.mark_spikes(torch.ones(4, 4), "binary")
        s2.view(-1)[3] = 5.0  # through a view
        assert sp.spike_info(s2) is None
        sp.mark_spikes(s2.fill_(1), "binary")  # marked again at the new version
        assert sp.spike_info(s2[1:]) is not None


def test_a_freed_marked_tensor_is_forgotten_and_its_address_not_trusted():
    with sp.pack_spikes():
        s = sp.mark_spikes(torch.ones(1000), "binary")
        ptr = s.untyped_storage().data_ptr()
        view = s[10:]
        del s
        gc.collect()
        assert sp.spike_info(view) is not None, "a live view keeps the base alive"
        del view
        gc.collect()
        for _ in range(200):  # a new tensor at the same address is not a spike tensor
            t = torch.full((1000,), 7.0)
            if t.untyped_storage().data_ptr() == ptr:
                break
        assert sp.spike_info(t) is None and sp.spike_info(t[10:]) is None
        from spikeops.ops.spike_pack import registry
        assert all(entry.ref() is not None for entry in registry._registry.values())


def test_marks_are_taken_only_while_packing_is_on_with_grad():
    t = torch.ones(8)
    assert sp.mark_spikes(t, "binary") is t and sp.spike_info(t) is None
    with sp.pack_spikes():
        with torch.no_grad():
            sp.mark_spikes(t, "binary")
        assert sp.spike_info(t) is None
        with torch.inference_mode():
            u = sp.mark_spikes(torch.ones(8), "binary")
        assert sp.spike_info(u) is None
        with sp.pack_spikes(False):
            sp.mark_spikes(t, "binary")
            assert not sp.packing_active()
        assert sp.spike_info(t) is None
        g = torch.ones(4, 4)[:, :2]  # not dense: refused
        sp.mark_spikes(g, "binary")
        assert sp.spike_info(g) is None
        sp.mark_spikes(t, "binary")
        assert sp.spike_info(t) is not None
    sp.set_enabled(False)
    try:
        with sp.pack_spikes():
            assert not sp.packing_active()
    finally:
        sp.set_enabled(True)


# ---------------------------------------------------------------- training with packing: identical gradients
def _conv_chain():
    return nn.Sequential(_Fn(lambda x: x.flatten(0, 1)), nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                         _Fn(lambda x: x.unflatten(0, (4, -1))), _lif(), _Fn(lambda x: x.flatten(0, 1)),
                         nn.Conv2d(8, 6, 3, padding=1, bias=False))


def _linear_chain():
    return nn.Sequential(nn.Linear(10, 12), _lif(), nn.Linear(12, 7), _lif(), _Fn(lambda x: x.transpose(-1, -2)),
                         nn.Linear(3, 5))


class _MatmulChain(nn.Module):
    """q, k, v from one spike tensor (three convs save the same spikes), q·kᵀ and a bmm of two spike tensors."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Conv1d(6, 6, 1) for _ in range(3))
        self.lif_in, self.lif_q, self.lif_k, self.lif_v = _lif(), _lif(), _lif(), _lif()

    def forward(self, x):  # [T, B, C, N]
        s = self.lif_in(x).flatten(0, 1)
        q = self.lif_q(self.q(s).unflatten(0, (4, -1))).flatten(0, 1)
        k = self.lif_k(self.k(s).unflatten(0, (4, -1))).flatten(0, 1)
        v = self.lif_v(self.v(s).unflatten(0, (4, -1))).flatten(0, 1)
        attn = q.transpose(1, 2) @ k  # [TB, N, N]
        return torch.bmm(v, attn) * 0.125 + torch.matmul(q.transpose(1, 2), v).sum()


def _pool_chain(ceil_mode=False):
    return nn.Sequential(_Fn(lambda x: x.flatten(0, 1)), nn.Conv2d(3, 8, 3, padding=1),
                         _Fn(lambda x: x.unflatten(0, (4, -1))), _lif(), _Fn(lambda x: x.flatten(0, 1)),
                         packing.SpikeMaxPool2d(3, 2, 1, ceil_mode=ceil_mode), nn.Conv2d(8, 4, 1),
                         _Fn(lambda x: x.unflatten(0, (4, -1))), _lif(), _Fn(lambda x: x.flatten(0, 1)),
                         packing.SpikeMaxPool2d(2), nn.Flatten(), nn.LazyLinear(3))


CHAINS = {"conv": (_conv_chain, (4, 2, 3, 12, 12)), "linear": (_linear_chain, (4, 3, 10)),
          "matmul": (_MatmulChain, (4, 2, 6, 9)), "maxpool": (_pool_chain, (4, 2, 3, 13, 13)),
          "maxpool-ceil": (lambda: _pool_chain(True), (4, 2, 3, 14, 14))}


def _train_step(make, shape, pack: bool, dtype=torch.float32, autocast=False):
    torch.manual_seed(0)
    model = make().to(dtype)
    x = (torch.randn(shape) * 2).to(dtype).requires_grad_()
    with torch.no_grad():
        model(x)  # materialise lazy modules
    _reset(model)
    # Backbones and converted models switch packing on themselves; "off" must be off for the comparison.
    (packing.enable_spike_packing if pack else packing.disable_spike_packing)(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        measured = packing.held_for_backward(model, x, inputs=(x,))
        loss = measured.pop("output").float().square().sum()
    loss.backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]
    return measured, grads


def _identical(a, b):
    return len(a) == len(b) and all((u is None and v is None) or torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gradients_identical_with_packing(chain, dtype):
    make, shape = CHAINS[chain]
    plain, grads_plain = _train_step(make, shape, False, dtype)
    packed, grads_packed = _train_step(make, shape, True, dtype)
    assert _identical(grads_plain, grads_packed)
    assert plain["packed_bytes"] == 0 and packed["packed_bytes"] > 0
    assert packed["held_bytes"] < plain["held_bytes"]


@pytest.mark.parametrize("chain", ["conv", "maxpool"])
def test_gradients_identical_under_bf16_autocast(chain):
    make, shape = CHAINS[chain]
    plain, grads_plain = _train_step(make, shape, False, autocast=True)
    packed, grads_packed = _train_step(make, shape, True, autocast=True)
    assert _identical(grads_plain, grads_packed)
    assert packed["packed_bytes"] > 0 and packed["held_bytes"] < plain["held_bytes"]


def test_autocast_weight_casts_are_kept_as_the_parameters():
    """Under autocast each conv saves a bfloat16 copy of its float32 weight; with packing on it is kept as the
    parameter (which the model holds anyway) and cast again in backward: nothing weight-sized is held, and
    the gradients are those of packing off, bit for bit."""
    make, shape = CHAINS["conv"]
    plain, grads_plain = _train_step(make, shape, False, autocast=True)
    packed, grads_packed = _train_step(make, shape, True, autocast=True)
    assert _identical(grads_plain, grads_packed)
    model = make()
    weight_casts = sum(m.weight.numel() * 2 for m in model.modules() if isinstance(m, nn.Conv2d))
    spikes = 4 * 2 * 8 * 12 * 12  # the second conv's bfloat16 spike input, 2 B each, held as 1 bit
    assert plain["held_bytes"] - packed["held_bytes"] == weight_casts + spikes * 2 - spikes // 8


def test_a_parameter_changed_in_place_before_backward_is_refused():
    """The bfloat16 copy autograd would have kept would not see the change; the cast kept as the parameter
    would: backward refuses instead of computing another gradient."""
    conv = nn.Conv2d(3, 4, 3)
    x = torch.rand(2, 3, 6, 6)
    with sp.pack_spikes(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    with torch.no_grad():
        conv.weight.mul_(2)
    with pytest.raises(RuntimeError, match="modified in place before backward"):
        y.float().sum().backward()


def test_casts_that_are_not_a_leafs_unchanged_copy_are_saved_as_they_are():
    from spikeops.ops.spike_pack.hooks import parameter_cast

    leaf = torch.rand(4, 5, requires_grad=True)
    other = torch.rand(5, 3)
    cast = leaf.to(torch.bfloat16)
    assert parameter_cast(cast) is not None
    assert parameter_cast((leaf * 1).to(torch.bfloat16)) is None          # a cast of a non-leaf
    assert parameter_cast(leaf.t().contiguous().t().to(torch.bfloat16)) is None  # not the leaf's strides
    with torch.no_grad():
        changed = leaf.to(torch.bfloat16)
        changed.add_(1)
    assert parameter_cast(changed) is None                                 # no grad_fn
    later = leaf.to(torch.bfloat16)
    with torch.no_grad():
        leaf.add_(1)
    assert parameter_cast(later) is None                                   # the leaf changed since the cast
    assert parameter_cast(other) is None


def test_conv_chain_memory_drop_is_the_spikes_minus_their_bits():
    """Conv→BN→LIF→Conv: the second conv's spike input (float32, 4 B) is held as 1 bit."""
    make, shape = CHAINS["conv"]
    plain, _ = _train_step(make, shape, False)
    packed, _ = _train_step(make, shape, True)
    spikes = 4 * 2 * 8 * 12 * 12
    assert plain["held_bytes"] - packed["held_bytes"] == spikes * 4 - spikes // 8
    assert packed["packed_bytes"] == spikes // 8


def test_spikes_saved_by_several_operators_are_packed_once():
    make, shape = CHAINS["matmul"]
    torch.manual_seed(0)
    model = packing.enable_spike_packing(make())
    with sp.SavedTensorsCounter() as counter:
        out = model(torch.randn(shape))
    packed = [key for key in counter.saved if key[0] == "packed"]
    # lif_in's spikes (saved by the q, k and v convs), qᵀ, k and v (qᵀ and v saved twice): 4 packed tensors
    assert len(packed) == 4, packed
    del out


@pytest.mark.parametrize("kind,levels,norm", [("ternary", None, None), ("integer", 4, None), ("integer", 4, 4.0)])
def test_multibit_neurons_chain(kind, levels, norm):
    def neuron(x):
        if kind == "ternary":
            s = multibit.bipolar_lif(x, backend="torch")[0]
        else:
            s = multibit.ielif(x, D=levels, norm=norm, backend="torch")[0]
        return sp.mark_spikes(s, kind, levels, norm=norm)

    def make():
        return nn.Sequential(nn.Linear(10, 16), _Fn(neuron), _Fn(lambda s: s.flatten(0, 1)), nn.Linear(16, 4))
    plain, grads_plain = _train_step(make, (4, 3, 10), False)
    packed, grads_packed = _train_step(make, (4, 3, 10), True)
    assert _identical(grads_plain, grads_packed)
    assert packed["packed_bytes"] == bits.bits_per_spike(kind, levels) * (4 * 3 * 16 // 8)


# ---------------------------------------------------------------- never packed wrongly
def test_unmarked_tensors_are_never_packed():
    model = packing.enable_spike_packing(nn.Sequential(nn.Linear(5, 5), _Fn(lambda x: (x > 0).float()),
                                                       nn.Linear(5, 2)))
    with sp.SavedTensorsCounter() as counter:
        model(torch.randn(3, 5)).sum().backward()
    assert counter.packed_bytes == 0 and not [k for k in counter.saved if k[0] == "packed"]


def test_spikes_modified_in_place_after_marking_are_kept_as_they_are():
    def bump(s):
        s.add_(0.5)  # no longer spikes
        return s

    def make():
        return nn.Sequential(nn.Linear(6, 8), _lif(), _Fn(bump), nn.Linear(8, 3))
    plain, grads_plain = _train_step(make, (4, 2, 6), False)
    packed, grads_packed = _train_step(make, (4, 2, 6), True)
    assert packed["packed_bytes"] == 0 and _identical(grads_plain, grads_packed)


def test_modified_after_saving_backward_uses_the_saved_values_or_raises():
    lin = nn.Linear(8, 3)
    with sp.pack_spikes():
        s = sp.mark_spikes((torch.randn(5, 8, requires_grad=True) > 0).float() * 1, "binary")
        out = lin(s)
    s.mul_(3)  # after the save: autograd's own version check still applies (or the bits hold the saved values)
    try:
        out.sum().backward()
    except RuntimeError as error:
        assert "inplace" in str(error)
    else:
        assert torch.equal(lin.weight.grad, (s / 3).sum(0).expand(3, 8))


def test_verify_catches_a_wrong_mark():
    with sp.pack_spikes(verify=True):
        x = torch.full((4, 4), 0.5, requires_grad=True)
        s = sp.mark_spikes(x * 1, "binary")  # a marking bug: not spikes
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert sp.pack(s, verify=True) is None
        assert any("kept unpacked" in str(w.message) for w in caught)


def test_no_grad_and_eval_are_untouched():
    make, shape = CHAINS["conv"]
    model = packing.enable_spike_packing(make())
    x = torch.randn(shape)
    with torch.no_grad():
        a = model(x)
        assert not _hooks_on_top()
    _reset(model)
    with torch.no_grad(), sp.pack_spikes():
        b = model(x)
    model.eval()
    _reset(model)
    with sp.SavedTensorsCounter() as counter:
        c = model(x)
    assert torch.equal(a, b) and counter.packed_bytes == 0 and c.requires_grad


def test_other_saved_tensor_hooks_take_precedence():
    """Activation checkpointing inside a packing model, and a packing model inside someone's hooks."""
    make, shape = CHAINS["conv"]
    torch.manual_seed(0)
    inner = make()
    plain_model = nn.Sequential(_Fn(lambda x: checkpoint(inner, x, use_reentrant=False)))
    x = torch.randn(shape)
    plain_model(x).square().sum().backward()
    grads = [p.grad.clone() for p in inner.parameters()]
    inner.zero_grad()
    _reset(inner)
    model = packing.enable_spike_packing(nn.Sequential(_Fn(lambda x: checkpoint(inner, x, use_reentrant=False))))
    model(x).square().sum().backward()
    assert _identical(grads, [p.grad for p in inner.parameters()])

    seen = []
    _reset(inner)
    packing.enable_spike_packing(inner)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t) or t, lambda t: t):
        inner(x).sum().backward()
    assert seen and all(isinstance(t, torch.Tensor) for t in seen)


def test_backward_twice_with_retain_graph():
    make, shape = CHAINS["maxpool"]
    torch.manual_seed(0)
    model = make()
    x = torch.randn(shape)
    with torch.no_grad():
        model(x)
    _reset(model)
    packing.enable_spike_packing(model)
    loss = model(x).square().sum()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss.backward()
    assert _identical(first, [p.grad for p in model.parameters()])


def test_switches():
    model = nn.Linear(2, 2)
    assert packing.enable_spike_packing(model) is model and packing.spike_packing_enabled(model)
    packing.enable_spike_packing(model)
    assert len(model._forward_pre_hooks) == 1
    assert packing.disable_spike_packing(model) is model and not packing.spike_packing_enabled(model)
    assert not model._forward_pre_hooks and not model._forward_hooks

    make, shape = CHAINS["conv"]
    torch.manual_seed(0)
    wrapped = packing.PackSpikes(make())
    with sp.SavedTensorsCounter() as counter:
        out = wrapped(torch.randn(shape))
    assert counter.packed_bytes > 0
    del out
    assert counter.packed_bytes == 0, "the graph is gone, and its packed spikes with it"

    class Boom(nn.Module):
        def forward(self, x):
            assert _hooks_on_top()
            raise RuntimeError("boom")
    boom = packing.enable_spike_packing(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        boom(torch.ones(1))
    assert not _hooks_on_top() and not sp.packing_active()


# ---------------------------------------------------------------- max-pooling without indices
POOLS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1, padding=1),
         dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
         dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2, stride=3, ceil_mode=True)]


@pytest.mark.parametrize("args", POOLS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("kind,levels", [("binary", None), ("ternary", None), ("integer", 4)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "unbatched"])
def test_spike_max_pool_matches_nn_max_pool(args, kind, levels, layout):
    torch.manual_seed(1)
    s = _spikes((3, 4, 11, 10), kind, levels, p=0.2)  # binary spikes: mostly ties
    if layout == "channels_last":
        s = s.contiguous(memory_format=torch.channels_last)
    if layout == "unbatched":
        s = s[0]
    grad = torch.randn_like(nn.functional.max_pool2d(s, **args))
    ref_x = s.clone().requires_grad_()
    ref = nn.MaxPool2d(**args)(ref_x)
    ref.backward(grad)

    x = s.clone().requires_grad_()
    with sp.pack_spikes(), sp.SavedTensorsCounter() as counter:
        spikes = sp.mark_spikes(x * 1, kind, levels)
        out = packing.SpikeMaxPool2d(**args)(spikes)
        assert sp.spike_info(out) == sp.SpikeInfo(kind, levels, None), "pooled spikes are spikes"
    assert torch.equal(out, ref)
    assert counter.saved and all(key[0] == "packed" for key in counter.saved), "no float input, no int64 indices"
    out.backward(grad)
    assert torch.equal(x.grad, ref_x.grad)


def test_spike_max_pool_falls_back_for_other_input():
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    with sp.pack_spikes(), sp.SavedTensorsCounter() as counter:
        out = sp.spike_max_pool2d(x, 3, 2, 1)
    assert torch.equal(out, nn.functional.max_pool2d(x, 3, 2, 1))
    assert any(n == out.numel() * 8 for n in counter.saved.values()), "nn.MaxPool2d's int64 indices"
    assert out.grad_fn.name() == nn.functional.max_pool2d(x, 3, 2, 1).grad_fn.name()
    out, indices = sp.spike_max_pool2d(x, 3, 2, 1, return_indices=True)
    assert indices.dtype == torch.int64


@pytest.mark.parametrize("args", POOLS[:3], ids=str)
def test_recompute_indices_for_float_input(args):
    x = torch.randn(2, 3, 10, 9).round()  # ties
    grad = torch.randn_like(nn.functional.max_pool2d(x, **args))
    a = x.clone().requires_grad_()
    nn.functional.max_pool2d(a, **args).backward(grad)
    b = x.clone().requires_grad_()
    with sp.SavedTensorsCounter() as counter:
        out = packing.SpikeMaxPool2d(**args, recompute_indices=True)(b)
    assert list(counter.saved.values()) == [x.numel() * 4]
    out.backward(grad)
    assert torch.equal(a.grad, b.grad)


# ---------------------------------------------------------------- a spikeops backbone
def test_spikformer_trains_identically_with_packing():
    from spikeops.models.layers import LIFNeuron
    from spikeops.models.spikformer import Spikformer

    def make():
        torch.manual_seed(0)
        model = Spikformer(T=2, embed_dim=16, num_heads=2, depth=1, num_classes=5, backend="torch",
                           imagenet=False, in_channels=3)
        for m in model.modules():
            if isinstance(m, LIFNeuron):
                _marked(m)
        return model
    plain, grads_plain = _train_step(make, (1, 3, 16, 16), False)
    packed, grads_packed = _train_step(make, (1, 3, 16, 16), True)
    assert _identical(grads_plain, grads_packed)
    assert packed["packed_bytes"] > 0 and packed["held_bytes"] < plain["held_bytes"]


# ---------------------------------------------------------------- models made by spikeops.convert
def _mark_binary(module, args, out):
    return sp.mark_spikes(out, "binary")


def test_converted_spikingjelly_model_with_its_max_pool():
    """A SpikingJelly model converted by spikeops.convert, its multi-step layer.MaxPool2d made index-free by
    use_spike_max_pool (kept a layer.MaxPool2d: step mode, set_step_mode); survives deepcopy and torch.save."""
    import copy
    import io
    layer = pytest.importorskip("spikingjelly.activation_based.layer")
    from spikingjelly.activation_based import functional, neuron

    def make():
        torch.manual_seed(0)
        return nn.Sequential(layer.Conv2d(3, 8, 3, padding=1, step_mode="m"), layer.BatchNorm2d(8, step_mode="m"),
                             neuron.LIFNode(step_mode="m"), layer.MaxPool2d(2, 2, step_mode="m"),
                             layer.Flatten(step_mode="m"), layer.Linear(8 * 4 * 4, 3, step_mode="m"))
    x = torch.randn(4, 2, 3, 8, 8)
    results = []
    for pack in (False, True):
        model, _ = spikeops.convert(make(), backend="torch")
        for m in model.modules():
            if isinstance(m, spikeops.BaseNeuron):
                m.register_forward_hook(_mark_binary)
        if pack:
            assert packing.use_spike_max_pool(model) == 1 and packing.use_spike_max_pool(model) == 0
            packing.enable_spike_packing(model)
            model = copy.deepcopy(model)
            buffer = io.BytesIO()
            torch.save(model, buffer)
            buffer.seek(0)
            model = torch.load(buffer, weights_only=False)
            assert isinstance(model[3], layer.MaxPool2d) and isinstance(model[3], packing.SpikeMaxPool2d)
            assert packing.spike_packing_enabled(model)
            functional.set_step_mode(model, "m")
        else:  # convert switched packing on; the unpacked reference turns it off
            packing.disable_spike_packing(model)
        measured = packing.held_for_backward(model, x)
        measured.pop("output").square().sum().backward()
        results.append((measured, [p.grad for p in model.parameters()]))
    (plain, grads_plain), (packed, grads_packed) = results
    assert _identical(grads_plain, grads_packed)
    spikes, pooled = 4 * 2 * 8 * 8 * 8, 4 * 2 * 8 * 4 * 4
    assert packed["packed_bytes"] == (spikes + pooled) // 8
    # the pool's float32 input and int64 indices, and the linear's float32 input, are gone
    assert plain["held_bytes"] - packed["held_bytes"] == spikes * 4 + pooled * 8 + pooled * 4 - packed["packed_bytes"]


def test_use_spike_max_pool_on_plain_max_pools():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2), nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True)))
    state = model.state_dict()
    assert packing.use_spike_max_pool(model, recompute_indices=True) == 2
    assert type(model[1]) is packing.SpikeMaxPool2d and model[2][0].ceil_mode and model[2][0].recompute_indices
    assert model.state_dict().keys() == state.keys()
    x = torch.randn(1, 1, 6, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
        out = model(x)
    assert saved and torch.int64 not in saved
    ref = nn.functional.max_pool2d(nn.functional.max_pool2d(model[0](x), 2), 3, 1, 1, ceil_mode=True)
    assert torch.equal(out, ref)


def test_nothing_outlives_a_training_step():
    from spikeops.ops.spike_pack import registry
    make, shape = CHAINS["maxpool"]
    torch.manual_seed(0)
    model = make()
    with torch.no_grad():
        model(torch.randn(shape))
    _reset(model)
    packing.enable_spike_packing(model)
    model(torch.randn(shape)).sum().backward()
    _reset(model)
    gc.collect()
    assert not registry._registry and not _hooks_on_top() and not sp.packing_active()


# ---------------------------------------------------------------- outputs of spikes that are spikes again
def _marked_leaf(values, kind, levels=None, norm=None):
    t = values.clone().requires_grad_()
    sp.mark_spikes(t, kind, levels, norm=norm)
    return t


def test_add_spikes_marks_sums_of_counts_as_integer_spikes():
    binary = (torch.rand(3, 8) > 0.5).float()
    counts = torch.randint(0, 3, (3, 8)).float()
    with sp.pack_spikes():
        a, b = _marked_leaf(binary, "binary"), _marked_leaf(counts, "integer", 2)
        out = sp.add_spikes(a, b)
        assert torch.equal(out, binary + counts)
        assert sp.spike_info(out) == sp.SpikeInfo("integer", 3, None)
        assert sp.spike_info(sp.add_spikes(out, out)).levels == 6
        # not counts: unmarked, ternary (negative values), divided integers; and sums past 255 levels
        assert sp.spike_info(sp.add_spikes(a, binary.clone())) is None
        assert sp.spike_info(sp.add_spikes(a, _marked_leaf(binary - 1, "ternary"))) is None
        assert sp.spike_info(sp.add_spikes(a, _marked_leaf(counts / 2, "integer", 2, norm=2.0))) is None
        big = _marked_leaf(counts, "integer", 254)
        assert sp.spike_info(sp.add_spikes(big, b)) is None
        assert sp.spike_info(sp.add_spikes(big, a)).levels == 255
        out.sum().backward()
        assert torch.equal(a.grad, torch.ones_like(a)) and torch.equal(b.grad, torch.ones_like(b))
    a = _marked_leaf(binary, "binary")
    assert sp.spike_info(sp.add_spikes(a, a)) is None, "packing off: no marks"


def test_gated_attention_outputs_are_marked_as_their_gate():
    from spikeops.ops import attention

    T, B, C, N = 2, 1, 4, 6
    q, k = ((torch.rand(T, B, C, N) > 0.4).float() for _ in range(2))
    with sp.pack_spikes():
        for backend in ("torch", "cpu"):
            out = attention.qk_token_attention(_marked_leaf(q, "binary"), _marked_leaf(k, "binary"), 2, backend=backend)
            assert sp.spike_info(out) == sp.SpikeInfo("binary", None, None)
            out = attention.qk_channel_attention(q, _marked_leaf(k * 2, "integer", 2), 2, backend=backend)
            assert sp.spike_info(out).levels == 2
            ternary = _marked_leaf(k - q, "ternary")  # -1 * 0 is -0.0: bits would not give it back
            assert sp.spike_info(attention.qk_token_attention(q, ternary, 2, backend=backend)) is None
            assert sp.spike_info(attention.qk_token_attention(q, k.clone(), 2, backend=backend)) is None
            out = attention.spiking_self_attention(q, k, q.clone(), 2, spike_operands=True, backend=backend)
            assert sp.spike_info(out).kind == "binary", "the attention neuron's spikes"


# ---------------------------------------------------------------- the C++ packing kernels
_needs_kernels = pytest.mark.skipif(not hasattr(torch.ops.spikeops, "pack_spike_values"),
                                    reason="spikeops._C not built")
_SIZES = [0, 1, 7, 8, 9, 64, 1000, 70001]  # 70001: several parallel tasks and a last group of one element
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(a, b):
    """Equal dtype, shape and bits (torch.equal takes -0.0 for 0.0)."""
    view = _BITS_VIEW[a.element_size()]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(view), b.view(view))


def _torch_path_pack(values, kind, levels=None, norm=None):
    return bits.pack_codes(bits.encode(values, kind, levels, norm), bits.bits_per_spike(kind, levels))


def _torch_path_unpack(planes, n, dtype, kind, norm=None):
    return bits.decode(bits.unpack_codes(planes, n), dtype, kind, norm)


@_needs_kernels
@pytest.mark.parametrize("dtype", bits.FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("kind,levels,norm", KINDS + [("integer", 4, 0.3), ("integer", 15, 7.1),
                                                      ("binary", 1, None)])
def test_cpu_kernels_match_the_torch_path(kind, levels, norm, dtype):
    pack, unpack = torch.ops.spikeops.pack_spike_values, torch.ops.spikeops.unpack_spike_values
    for n in _SIZES:
        torch.manual_seed(n)
        values = _spikes((n,), kind, levels, norm, dtype)
        planes = pack(values, kind, levels, norm)
        assert torch.equal(planes, _torch_path_pack(values, kind, levels, norm)), n
        assert _same_bits(unpack(planes, n, dtype, kind, norm), values), n
        # every code the planes can hold, not only those of levels 0..D
        noise = torch.randint(0, 256, planes.shape, dtype=torch.uint8)
        assert _same_bits(unpack(noise, n, dtype, kind, norm), _torch_path_unpack(noise, n, dtype, kind, norm)), n


@_needs_kernels
@pytest.mark.parametrize("dtype", bits.FLOAT_DTYPES, ids=str)
def test_cpu_kernels_code_other_accepted_values_as_the_torch_path(dtype):
    """Values the torch path codes without refusing them (not spikes of the kind, but codes that fit):
    binary: anything nonzero is 1 (NaN too), -0.0 is 0; ternary and integer: truncated, as a cast does."""
    pack = torch.ops.spikeops.pack_spike_values
    odd = torch.tensor([0.5, -3.0, float("nan"), -0.0, float("inf"), 1e30, -1e-30], dtype=dtype).repeat(3)
    assert torch.equal(pack(odd, "binary"), _torch_path_pack(odd, "binary"))
    ternary = torch.linspace(-1.99, 2.99, 77, dtype=torch.float64).to(dtype)
    assert torch.equal(pack(ternary, "ternary"), _torch_path_pack(ternary, "ternary"))
    levels = torch.linspace(-0.99, 7.9, 91, dtype=torch.float64).to(dtype)  # 3 bits: codes up to 7 fit
    assert torch.equal(pack(levels, "integer", 4), _torch_path_pack(levels, "integer", 4))
    halves = torch.arange(0, 15, dtype=dtype) / 4  # 0.25 * 2 = 0.5 rounds half to even
    assert torch.equal(pack(halves, "integer", 7, 2.0), _torch_path_pack(halves, "integer", 7, 2.0))


@_needs_kernels
@pytest.mark.parametrize("kind,levels,norm", [KINDS[0], KINDS[1], KINDS[5]])
def test_pack_values_reads_non_contiguous_values_in_logical_order(kind, levels, norm):
    base = _spikes((6, 10, 4), kind, levels, norm)
    for values in (base.transpose(0, 2), base[:, 1:9:3], base[..., 1], base.permute(1, 2, 0)[2:]):
        planes = bits.pack_values(values, kind, levels, norm)
        assert torch.equal(planes, naive.pack(values, kind, levels, norm))
        back = bits.unpack_values(planes, values.numel(), values.dtype, kind, norm)
        assert _same_bits(back, values.reshape(-1))


@_needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cpu_pack_refuses_values_not_of_the_kind(dtype):
    pack = torch.ops.spikeops.pack_spike_values
    for kind, levels, norm, bad in [("ternary", None, None, 3.0), ("ternary", None, None, -2.0),
                                    ("ternary", None, None, float("nan")), ("ternary", None, None, 300.0),
                                    ("integer", 4, None, 8.0), ("integer", 4, None, -1.0),
                                    ("integer", 4, None, 256.0), ("integer", 1, None, float("inf")),
                                    ("integer", 4, 4.0, 2.0), ("integer", 4, 4.0, float("nan"))]:
        for n, at in [(9, 8), (70001, 40000)]:
            values = torch.zeros(n, dtype=dtype)
            values[at] = bad
            with pytest.raises(RuntimeError, match=f"values: expected {kind} spikes.*, got .* at element {at}$"):
                pack(values, kind, levels, norm)


@_needs_kernels
def test_cpu_kernels_refuse_bad_arguments():
    pack, unpack = torch.ops.spikeops.pack_spike_values, torch.ops.spikeops.unpack_spike_values
    values = torch.tensor([0.0, 1.0, 1.0])
    for args, match in [(("unary",), "kind: expected one of"), (("integer",), "levels: expected an integer D"),
                        (("integer", 0), "levels: expected an integer D in 1..255"),
                        (("integer", 256), "levels: expected an integer D in 1..255 for integer spikes, got 256"),
                        (("binary", 3), "levels: only integer spikes take levels, got levels=3"),
                        (("ternary", 1), "levels: only integer spikes take levels"),
                        (("ternary", None, 2.0), "norm: only integer spikes take norm"),
                        (("integer", 4, 0.0), "norm: expected None or a finite number > 0, got 0"),
                        (("integer", 4, -1.0), "norm: expected None or a finite number > 0"),
                        (("integer", 4, float("nan")), "norm: expected None or a finite number > 0"),
                        (("integer", 4, float("inf")), "norm: expected None or a finite number > 0")]:
        with pytest.raises(RuntimeError, match=match):
            pack(values, *args)
    for wrong in (values.int(), values.bool(), values.to(torch.uint8), values.to(torch.complex64)):
        with pytest.raises(RuntimeError, match="values: expected float32, float64, float16 or bfloat16, got"):
            pack(wrong, "binary")
    with pytest.raises(RuntimeError, match="values: expected a contiguous tensor"):
        pack(torch.zeros(6)[::2], "binary")

    planes = pack(values, "ternary")
    f32 = torch.float32
    for args, match in [((planes, 9, f32, "ternary"),
                         "n: expected ceil\\(n / 8\\) == planes.size\\(1\\) = 1, got n = 9"),
                        ((planes, -1, f32, "ternary"), "n: expected .*, got n = -1"),
                        ((planes, 0, f32, "ternary"), "n: expected .*, got n = 0"),
                        ((planes, 3, torch.int32, "ternary"), "dtype: expected float32, .*got Int"),
                        ((planes, 3, f32, "unary"), "kind: expected one of"),
                        ((planes, 3, f32, "ternary", 2.0), "norm: only integer spikes take norm"),
                        ((planes[:1], 3, f32, "integer", 0.0), "norm: expected None or a finite"),
                        ((planes.float(), 3, f32, "ternary"), "planes: expected uint8, got Float"),
                        ((planes.reshape(-1), 3, f32, "ternary"), "planes: expected a contiguous \\[bits, groups\\]"),
                        ((torch.zeros(4, 2, dtype=torch.uint8).t(), 3, f32, "ternary"),
                         "planes: expected a contiguous \\[bits, groups\\]"),
                        ((planes, 3, f32, "binary"), "planes: expected 1 rows \\(bits\\) for binary spikes, got 2"),
                        ((planes[:1], 3, f32, "ternary"), "planes: expected 2 rows .* ternary spikes, got 1"),
                        ((torch.zeros(3, 1, dtype=torch.uint8), 3, f32, "ternary"), "planes: expected 2 rows"),
                        ((torch.zeros(9, 1, dtype=torch.uint8), 3, f32, "integer"),
                         "planes: expected 1..8 rows \\(bits\\) for integer spikes, got 9"),
                        ((torch.zeros(0, 1, dtype=torch.uint8), 3, f32, "integer"), "planes: expected 1..8 rows")]:
        with pytest.raises(RuntimeError, match=match):
            unpack(*args)


def test_a_forward_without_backward_leaves_no_graph_alive():
    """Under packing, tensors saved as they are (an operator's own outputs among them: the fused BatchNorm ->
    neuron saves its statistics) must not hold their grad_fn: a training-mode forward whose backward never
    runs (validation without no_grad, an exception) would keep its whole graph alive through the cycle."""
    import gc
    import weakref

    from spikeops.ops.spike_pack import pack_spikes
    from spikeops.nn.batchnorm_fusion import batchnorm_then_neuron
    from spikeops.nn.neurons import LIFNeuron

    bn, conv = torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 3, 1)
    x = torch.randn(4, 2, 3, 8, 8, requires_grad=True)
    for pool in (None, torch.nn.MaxPool2d(3, 2, 1)):
        activation = x * 1.0
        alive = weakref.ref(activation)
        with pack_spikes():
            out = conv(batchnorm_then_neuron(bn, LIFNeuron(backend="cpu"), activation, pool=pool).flatten(0, 1))
        assert out.requires_grad
        del activation, out
        gc.collect()
        assert alive() is None
