"""store_v_last=False: the forward neither allocates nor writes the final membrane, and nothing else changes.

Every backend and neuron kind gives bit-identical spikes, v_seq and gradients with and without it; v_last is
None from the Python entry points and an empty tensor of x's dtype and device from the operators (as v_seq
is when not stored), fake kernels included; the stateless modules ask for it."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import spikeops
from spikeops import functional as F
from spikeops.ops.batchnorm_neuron import batchnorm_neuron
from spikeops.ops.batchnorm_neuron import op as batchnorm_op
from spikeops.ops.neuron import op as neuron_op
from spikeops.ops.neuron.config import FIRE_BIPOLAR, FIRE_INTEGER, make_config
from spikeops.ops.neuron.op import neuron_multi_step

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

ALL_BACKENDS = [pytest.param("torch", id="torch"), *FUSED_BACKENDS]
BASE = dict(v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate=1, alpha=2.0)
# Every charge law of the neuron table, and the fire modes other than binary.
KINDS = {
    "if": dict(tau=None),
    "lif": dict(tau=2.0),
    "plif": dict(learnable_tau=True),
    "qif": dict(charge_law="quadratic", tau=2.0, v_c=0.8, a0=1.0, v_reset=-0.1),
    "eif": dict(charge_law="exponential", tau=2.0, delta_T=1.0, theta_rh=0.8, v_reset=-0.1),
    "ielif": dict(tau=2.0, fire_mode=FIRE_INTEGER, levels=4, v_threshold=0.5, v_reset=None),
    "bipolar": dict(tau=2.0, fire_mode=FIRE_BIPOLAR, v_threshold=0.5),
}


def _device(backend):
    return BACKEND_DEVICE.get(backend, "cpu")


def _run(backend, kind, store_v_seq, store_v_last, shape=(5, 3, 37)):
    """Forward and backward of a loss over what the call returns besides v_last: outputs and gradients."""
    device = _device(backend)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 1.5 + 0.6).to(device).requires_grad_(True)
    v0 = (torch.rand(shape[1:], generator=g) * 0.5).to(device).requires_grad_(True)
    leaves = [x, v0]
    leak = None
    if kind == "plif":
        leak = torch.tensor(0.4, device=device, requires_grad=True)
        leaves.append(leak)
    spikes, v_last, v_seq = neuron_multi_step(x, v0, cfg=make_config(**dict(BASE, **KINDS[kind])), leak=leak,
                                              backend=backend, store_v_seq=store_v_seq, store_v_last=store_v_last)
    loss = (spikes * torch.randn(shape, generator=g).to(device)).sum()
    if store_v_seq:
        loss = loss + (v_seq * torch.randn(shape, generator=g).to(device)).sum()
    grads = torch.autograd.grad(loss, leaves)
    out = dict(spikes=spikes, v_seq=v_seq, **{f"grad_{i}": grad for i, grad in enumerate(grads)})
    return out, v_last


@pytest.mark.parametrize("store_v_seq", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_outputs_and_gradients_are_bit_identical_without_v_last(backend, kind, store_v_seq):
    stored, v_last = _run(backend, kind, store_v_seq, store_v_last=True)
    skipped, no_v_last = _run(backend, kind, store_v_seq, store_v_last=False)
    assert v_last is not None and v_last.shape == (3, 37)
    assert no_v_last is None
    for name, want in stored.items():
        got = skipped[name]
        assert (got is None) == (want is None), name
        if want is not None:
            assert torch.equal(got, want), name


def _operator_args(backend, T=4, N=10, plif=False):
    device = _device(backend)
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(T, N, generator=g) + 0.5).to(device)
    v0 = torch.rand(N, generator=g).to(device)
    cfg = make_config(**dict(BASE, **KINDS["plif" if plif else "lif"])).as_list()
    return x, v0, torch.tensor([0.4], device=device) if plif else None, cfg


def _forward_op(backend):
    return torch.ops.spikeops.neuron_forward_triton if backend == "triton" else torch.ops.spikeops.neuron_forward


@pytest.mark.parametrize("T", [0, 1, 4])
@pytest.mark.parametrize("plif", [False, True])
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_operator_returns_an_empty_v_last_when_not_stored(backend, plif, T):
    x, v0, leak, cfg = _operator_args(backend, T=T, plif=plif)
    op = _forward_op(backend)
    spikes, v_last, v_seq = op(x, v0, leak, cfg, True)  # store_v_last defaults to True
    spikes_only, empty, v_seq_again = op(x, v0, leak, cfg, True, False)
    assert v_last.shape == (10,)
    assert empty.shape == (0,) and empty.dtype == x.dtype and empty.device == x.device
    assert torch.equal(spikes_only, spikes) and torch.equal(v_seq_again, v_seq)


@pytest.mark.parametrize("op_name", ["neuron_forward", "neuron_forward_triton"])
def test_fake_kernel_returns_the_empty_v_last(op_name):
    x, v0, leak, cfg = _operator_args("cpu")
    op = getattr(torch.ops.spikeops, op_name)
    with FakeTensorMode() as mode:
        fake_x, fake_v0 = mode.from_tensor(x), mode.from_tensor(v0)
        spikes, v_last, v_seq = op(fake_x, fake_v0, None, cfg, False, False)
        _, stored_v_last, _ = op(fake_x, fake_v0, None, cfg, False)
    assert spikes.shape == x.shape and v_seq.shape == (0,)
    assert v_last.shape == (0,) and v_last.dtype == x.dtype
    assert stored_v_last.shape == (10,)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_vmap_and_double_backward_without_v_last(backend):
    device = _device(backend)
    x = (torch.randn(4, 3, 6) + 0.6).to(device)
    per_sample = torch.func.vmap(lambda xs: F.lif(xs, backend=backend, store_v_last=False)[0], in_dims=1)(x)
    assert torch.equal(per_sample, torch.stack([F.lif(x[:, i], backend="torch")[0] for i in range(3)]))

    def second(store_v_last):
        leaf = x.clone().requires_grad_(True)
        _, _, v_seq = F.lif(leaf, backend=backend, store_v_seq=True, store_v_last=store_v_last,
                            surrogate_function="ATan")
        (gx,) = torch.autograd.grad((v_seq * v_seq).sum(), leaf, create_graph=True)
        return torch.autograd.grad(gx.sum(), leaf)[0]
    assert torch.equal(second(False), second(True))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_batchnorm_neuron_is_bit_identical_without_v_last(backend):
    device = _device(backend)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 5, generator=g).to(device)

    def run(store_v_last):
        x = x0.clone().requires_grad_(True)
        weight = torch.linspace(0.5, 1.5, 4, device=device).requires_grad_(True)
        bias = torch.linspace(-0.2, 0.3, 4, device=device).requires_grad_(True)
        spikes, v_last, v_seq = batchnorm_neuron(x, None, weight=weight, bias=bias, cfg=make_config(**BASE, tau=2.0),
                                                 backend=backend, store_v_seq=True, store_v_last=store_v_last)
        loss = (spikes * torch.arange(spikes.numel(), device=device).view(spikes.shape).sin()).sum() + v_seq.sum()
        return (spikes, v_seq, *torch.autograd.grad(loss, (x, weight, bias))), v_last

    stored, v_last = run(True)
    skipped, no_v_last = run(False)
    assert v_last.shape == (2, 4, 5) and no_v_last is None
    for got, want in zip(skipped, stored):
        assert torch.equal(got, want)


def _store_v_last_of(monkeypatch, function, position):
    """Records the store_v_last argument of every ``function.apply`` call (``position`` in its arguments)."""
    seen = []
    original = function.apply

    def spy(*args):
        seen.append(args[position])
        return original(*args)
    monkeypatch.setattr(function, "apply", spy)
    return seen


def test_stateless_lif_neuron_does_not_store_v_last(monkeypatch):
    x = torch.randn(4, 2, 8) + 0.6
    neuron_calls = _store_v_last_of(monkeypatch, neuron_op.NeuronFunction, 5)
    batchnorm_calls = _store_v_last_of(monkeypatch, batchnorm_op.BatchNormNeuronFunction, 12)
    neuron = spikeops.nn.neurons.official_lif("cpu", stateless=True)
    stateful = spikeops.nn.neurons.official_lif("cpu")
    assert torch.equal(neuron(x), stateful(x))
    bn = dict(weight=None, bias=None, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5)
    stateful.reset()
    assert torch.equal(neuron(x.unsqueeze(-1), batchnorm=bn), stateful(x.unsqueeze(-1), batchnorm=bn))
    # The stateful module keeps its membrane: only the stateless calls skip it.
    assert neuron_calls == [False, True] and batchnorm_calls == [False, True]


def test_batchnorm_neuron_refuses_a_store_v_last_that_is_not_a_bool():
    """(The operators' schema refuses one: tests/hardening/test_neuron_reliability.py; neuron_multi_step's
    check: tests/test_neuron_errors.py.)"""
    with pytest.raises(TypeError, match="store_v_last: expected a bool"):
        batchnorm_neuron(torch.ones(2, 2, 3), cfg=make_config(**BASE, tau=2.0), backend="cpu", store_v_last=None)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_compiled_backward_without_v_last(backend):
    """A traced backward hands the empty v_last an empty gradient, not None: it must not reach the kernel."""
    x0 = (torch.randn(4, 2, 8) + 0.6).to(_device(backend))
    neuron = spikeops.nn.neurons.LIFNeuron(backend=backend)
    compiled = torch.compile(neuron, fullgraph=True, backend="aot_eager")
    grads = []
    for run in (neuron, compiled):
        x = x0.clone().requires_grad_(True)
        (run(x) * torch.linspace(-1, 1, 8, device=x.device)).sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
