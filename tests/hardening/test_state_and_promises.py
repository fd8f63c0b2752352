"""Issue 18, items 5, 6, 9, 10 and 11 for the attention operators and the stateful modules:

* 5: Triton SSA with Inf (or NaN) in integer-valued operands gives the reference's spikes (no OverflowError).
* 6: a stateful neuron given a new batch or spatial size without reset() restarts from rest, as SpikingJelly 2.0's
  BaseNode does (so do the neurons of the stateful attention blocks).
* 9: validation gaps: SSA's scale=±inf, spike_operands="yes", sparse and nested tensors, backend="bogus" and
  PLIF(init_tau=inf) at construction.
* 10: broken promises (spike_operands=True with non-binary operands, check_ternary=False with non-ternary q/k)
  raise ValueError naming the operand on every backend in debug mode (spikeops/ops/promises.py).
* 11: the one documented NaN-gradient difference (a NaN in a gated-off expert's output: router gradient NaN on the
  fused backends, finite on torch); every other gradient agrees.
"""
import math

import pytest
import torch

import spikeops
from spikeops.ops.attention import (qk_channel_attention, qk_token_attention, spike_driven_attention,
                                    spiking_self_attention)
from spikeops.ops.bipolar_attention.op import bipolar_attention, shiftmax_attention
from spikeops.ops.experts_mixture.op import experts_mixture
from spikeops.ops.promises import check_promises, promises_checked

FUSED = [b for b in ("cpu", "triton") if b != "cpu" or spikeops.backends.extension_available()]
ALL = ["torch"] + FUSED


def _spikes(shape, seed, rate=0.5):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < rate).float()


# ----------------------------------------------------------------------------------- item 5
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("operand", ["q", "k", "v"])
@pytest.mark.parametrize("spike_operands", [None, False])
def test_ssa_with_nonfinite_integer_operands_matches_the_reference(value, operand, spike_operands):
    xs = {name: _spikes((2, 1, 4, 6), seed) for seed, name in enumerate("qkv")}
    xs[operand][0, 0, 1, 2] = value
    want = spiking_self_attention(**xs, heads=2, backend="torch")
    for backend in FUSED:
        got = spiking_self_attention(**xs, heads=2, spike_operands=spike_operands, backend=backend)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num()), backend


def test_integer_bound_is_none_for_nonfinite_values():
    from spikeops.ops.attention.ssa import integer_bound
    assert integer_bound(torch.tensor([1.0, math.inf])) is None
    assert integer_bound(torch.tensor([1.0, math.nan])) is None
    assert integer_bound(torch.tensor([1.0, 200.0])) is None
    assert integer_bound(torch.tensor([1.0, -3.0]), torch.empty(0)) == 3


# ----------------------------------------------------------------------------------- item 6
def _sj_lif(step_mode, **kw):
    from spikingjelly.activation_based import neuron
    return neuron.LIFNode(step_mode=step_mode, **kw)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("batches", [(1, 3), (2, 3), (3, 2)])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_new_batch_size_without_reset_restarts_from_rest_as_spikingjelly(backend, step_mode, batches, v_reset):
    ours = spikeops.LIF(step_mode=step_mode, backend=backend, v_reset=v_reset, store_v_seq=True)
    theirs = _sj_lif(step_mode, v_reset=v_reset, store_v_seq=True)
    g = torch.Generator().manual_seed(0)
    for B in batches:
        x = torch.randn((4, B, 5) if step_mode == "m" else (B, 5), generator=g) + 0.7
        for _ in range(2):  # the second call continues from the membrane the first left
            assert torch.equal(ours(x), theirs(x))
            torch.testing.assert_close(ours.v, theirs.v)
            torch.testing.assert_close(ours.v_seq, theirs.v_seq)


@pytest.mark.parametrize("make", [lambda b: spikeops.IF(step_mode="m", backend=b),
                                  lambda b: spikeops.PLIF(step_mode="m", backend=b),
                                  lambda b: spikeops.IELIF(step_mode="m", backend=b),
                                  lambda b: spikeops.BipolarLIF(step_mode="m", backend=b)],
                         ids=["IF", "PLIF", "IELIF", "BipolarLIF"])
@pytest.mark.parametrize("backend", ALL)
def test_every_stateful_neuron_restarts_on_a_new_shape(make, backend):
    g = torch.Generator().manual_seed(1)
    neuron, fresh = make(backend), make(backend)
    neuron(torch.randn(3, 2, 5, generator=g) + 0.7)
    x = torch.randn(3, 4, 5, generator=g) + 0.7
    assert torch.equal(neuron(x), fresh(x))
    torch.testing.assert_close(neuron.v, fresh.v)


@pytest.mark.parametrize("cls", [spikeops.TokenQKAttention, spikeops.SpikeDrivenSelfAttention, spikeops.EMSA])
def test_stateful_block_given_a_new_batch_size_restarts_its_neurons(cls):
    torch.manual_seed(0)
    kw = dict(num_experts=2, expert_dim=4) if cls is spikeops.EMSA else dict(num_heads=2)
    block = cls(8, backend=FUSED[0], **kw).eval()
    g = torch.Generator().manual_seed(2)
    block(torch.randn(2, 2, 8, 2, 2, generator=g) + 0.5)
    x = torch.randn(2, 3, 8, 3, 3, generator=g) + 0.5
    got = block(x)
    block.reset()
    torch.testing.assert_close(got, block(x))


# ----------------------------------------------------------------------------------- item 9
def test_ssa_refuses_an_infinite_scale_and_a_non_boolean_spike_operands(no_launch):
    from .registry import CASES
    q = torch.ones(2, 1, 4, 3)
    for backend in ALL:
        for scale in (math.inf, -math.inf, math.nan):
            with no_launch(CASES["spiking_self_attention"]), pytest.raises(ValueError, match=r"scale: expected a number \(finite"):
                spiking_self_attention(q, q, q, 2, scale=scale, backend=backend)
        with no_launch(CASES["spiking_self_attention"]), pytest.raises(ValueError, match="spike_operands: .*'yes'"):
            spiking_self_attention(q, q, q, 2, spike_operands="yes", backend=backend)


def _sparse_and_nested():
    dense = torch.ones(2, 1, 4, 3)
    return {"sparse_coo": dense.to_sparse(), "sparse_csr": torch.ones(4, 3).to_sparse_csr(),
            "nested": torch.nested.nested_tensor([torch.ones(4, 3), torch.ones(4, 2)])}


@pytest.mark.parametrize("kind", ["sparse_coo", "sparse_csr", "nested"])
@pytest.mark.parametrize("backend", ALL)
def test_sparse_and_nested_tensors_are_refused_by_name(kind, backend):
    bad, good = _sparse_and_nested()[kind], torch.ones(2, 1, 4, 3)
    calls = [
        ("k", lambda: qk_token_attention(good, bad, 2, backend=backend)),
        ("q", lambda: qk_channel_attention(bad, good, 2, backend=backend)),
        ("v", lambda: spike_driven_attention(good, good, bad, 2, backend=backend)),
        ("q", lambda: spiking_self_attention(bad, good, good, 2, backend=backend)),
        ("k", lambda: shiftmax_attention(good, bad, good, 1.0, backend=backend)),
        ("v", lambda: bipolar_attention(good, good, bad, 1.0, backend=backend)),
        ("expert_outputs", lambda: experts_mixture(torch.ones(2, 4), bad, backend=backend)),
        ("router_spikes", lambda: experts_mixture(bad, torch.ones(2, 1, 4, 3, 2), backend=backend)),
    ]
    for name, call in calls:
        with pytest.raises(TypeError, match=rf"{name}: expected a dense \(torch.strided\) tensor"):
            call()


@pytest.mark.parametrize("make", [
    lambda: spikeops.LIF(backend="bogus"), lambda: spikeops.IF(backend="bogus"), lambda: spikeops.PLIF(backend="bogus"),
    lambda: spikeops.QIF(backend="bogus"), lambda: spikeops.IELIF(backend="bogus"),
    lambda: spikeops.BipolarLIF(backend="bogus"), lambda: spikeops.Multispike(backend="bogus"),
    lambda: spikeops.TokenQKAttention(8, num_heads=2, backend="bogus"),
    lambda: spikeops.SpikingSelfAttention(8, num_heads=2, backend="bogus"),
    lambda: spikeops.BipolarSelfAttention(8, num_heads=2, backend="bogus"),
    lambda: spikeops.EMSA(8, num_experts=2, expert_dim=4, backend="bogus"),
    lambda: spikeops.EMSP(8, backend="bogus"),
], ids=["LIF", "IF", "PLIF", "QIF", "IELIF", "BipolarLIF", "Multispike", "TokenQKAttention", "SpikingSelfAttention",
        "BipolarSelfAttention", "EMSA", "EMSP"])
def test_modules_check_the_backend_at_construction(make):
    with pytest.raises(ValueError, match=r"backend: expected one of .* got 'bogus'"):
        make()


@pytest.mark.parametrize("init_tau", [math.inf, math.nan, 1.0])
def test_plif_refuses_a_non_finite_init_tau(init_tau):
    with pytest.raises(ValueError, match=rf"init_tau: must be a finite number > 1, got {init_tau!r}"):
        spikeops.PLIF(init_tau=init_tau)


# ----------------------------------------------------------------------------------- item 10
def test_debug_mode_is_off_by_default_and_scoped():
    assert not promises_checked()
    with check_promises():
        assert promises_checked()
        with check_promises(False):
            assert not promises_checked()
        assert promises_checked()
    assert not promises_checked()


@pytest.mark.parametrize("backend", ALL)
def test_broken_spike_operands_promise_is_refused_in_debug_mode(backend):
    q = _spikes((2, 1, 4, 3), 0)
    v = q.clone()
    v[1, 0, 2, 1] = 2.5
    with check_promises(), pytest.raises(ValueError, match=r"v: spike_operands=True promises binary .* 2.5"):
        spiking_self_attention(q, q, v, 2, spike_operands=True, backend=backend)
    with check_promises():  # kept promises pass, and equal the reference
        torch.testing.assert_close(spiking_self_attention(q, q, q, 2, spike_operands=True, backend=backend),
                                   spiking_self_attention(q, q, q, 2, backend="torch"))


@pytest.mark.parametrize("backend", ALL)
def test_broken_ternary_promise_is_refused_in_debug_mode(backend):
    q = _spikes((2, 1, 4, 3), 0) - _spikes((2, 1, 4, 3), 1)
    k = q.clone()
    k[0, 0, 1, 1] = 0.5
    with check_promises(), pytest.raises(ValueError, match=r"k: expected ternary spikes .* 0.5"):
        bipolar_attention(q, k, q, 1.0, check_ternary=False, backend=backend)
    with check_promises(), pytest.raises(ValueError, match=r"k: expected ternary"):
        shiftmax_attention(q, k, q, 1.0, check_ternary=False, backend=backend)


# ----------------------------------------------------------------------------------- item 11
def test_nan_in_a_gated_off_expert_is_the_documented_router_gradient_exception():
    router = torch.tensor([[1.0, 0.0, 1.0]])
    experts = torch.arange(12.0).view(1, 3, 4) / 10
    experts[0, 1, 2] = math.nan  # expert 1 is gated off
    results = {}
    for backend in ALL:
        r, a = router.clone().requires_grad_(True), experts.clone().requires_grad_(True)
        y = experts_mixture(r, a, backend=backend)
        y.sum().backward()
        results[backend] = (y.detach(), r.grad, a.grad)
    y_ref, r_ref, a_ref = results["torch"]
    assert y_ref.isfinite().all() and r_ref.isfinite().all()
    for backend in FUSED:
        y, r_grad, a_grad = results[backend]
        assert torch.equal(y, y_ref) and torch.equal(a_grad, a_ref)
        torch.testing.assert_close(r_grad[:, [0, 2]], r_ref[:, [0, 2]])  # sums of 4 terms: rounding order
        assert r_grad[0, 1].isnan()  # README "Guarantees": the one NaN-gradient exception
