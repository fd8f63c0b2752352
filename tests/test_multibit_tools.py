"""Integer <-> binary spike conversion, MPRF and its folding, and bad-input errors of the multi-bit neurons."""
import re

import pytest
import torch
from torch import nn

import spikeops
from spikeops import multibit as M

from test_neuron_errors import no_kernel  # noqa: F401  (fixture: any kernel launch fails the test)


# ---------------------------------------------------------------- expand_to_binary / collapse_to_integer
def integer_spikes(shape, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, D + 1, shape, generator=g).float()


@pytest.mark.parametrize("D", [1, 3, 4])
def test_expand_is_a_thermometer_code_and_collapse_inverts_it(D):
    spikes = integer_spikes((3, 2, 5), D)
    binary = spikeops.expand_to_binary(spikes, D)
    assert binary.shape == (3 * D, 2, 5) and binary.dtype == spikes.dtype
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    grouped = binary.view(3, D, 2, 5)
    for t in range(3):
        for d in range(D):
            assert torch.equal(grouped[t, d], (spikes[t] > d).float())
    assert torch.equal(spikeops.collapse_to_integer(binary, D), spikes)


def test_linear_layer_gives_the_same_result_on_both_forms():
    """An IE-LIF model runs spike-driven at inference: a bias-free linear layer over the D binary virtual
    steps, summed per logical step, equals the layer on the integer spikes (bias added once afterwards)."""
    D, T = 4, 3
    x = torch.randn(T, 8, 16) * 2 + 1
    spikes = M.ielif(x, D=D, backend="torch")[0]
    layer = nn.Linear(16, 6)
    with torch.no_grad():  # integer weights: every sum below is exact in float32
        layer.weight.copy_(torch.randint(-8, 9, layer.weight.shape).float())
        layer.bias.copy_(torch.randint(-4, 5, layer.bias.shape).float())
    integer_path = layer(spikes)
    binary = spikeops.expand_to_binary(spikes, D)
    spike_driven = spikeops.collapse_to_integer(nn.functional.linear(binary, layer.weight), D) + layer.bias
    assert torch.equal(spike_driven, integer_path)

    layer_float = nn.Linear(16, 6)  # arbitrary weights: equal up to float summation order
    spike_driven = spikeops.collapse_to_integer(nn.functional.linear(binary, layer_float.weight), D) + layer_float.bias
    torch.testing.assert_close(spike_driven, layer_float(spikes), atol=1e-5, rtol=1e-5)


def test_expand_accepts_integer_dtypes_and_half():
    spikes = integer_spikes((2, 7), 3)
    for dtype in (torch.uint8, torch.int8, torch.float16, torch.bfloat16):
        binary = spikeops.expand_to_binary(spikes.to(dtype), 3)
        assert binary.dtype == dtype
        assert torch.equal(spikeops.collapse_to_integer(binary, 3).float(), spikes)


@pytest.mark.parametrize("call, message", [
    (lambda: spikeops.expand_to_binary(torch.tensor([[0.0, 5.0]]), 4), "spikes: expected integer spike counts in 0..4, found 5.0"),
    (lambda: spikeops.expand_to_binary(torch.tensor([[-1.0]]), 4), "found -1.0"),
    (lambda: spikeops.expand_to_binary(torch.tensor([[1.5]]), 4), "found 1.5"),
    (lambda: spikeops.expand_to_binary(torch.tensor(1.0), 4), "spikes: expected a time-major tensor"),
    (lambda: spikeops.expand_to_binary(torch.ones(2, 2), 0), "D: expected an integer"),
    (lambda: spikeops.collapse_to_integer(torch.ones(6, 2), 4), "multiple of D=4"),
])
def test_conversion_errors(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


# ---------------------------------------------------------------- MPRF
def dyadic(shape, low, high, step, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(int(low / step), int(high / step) + 1, shape, generator=g).float() * step


@pytest.mark.parametrize("per_channel", [False, True])
def test_mprf_folds_into_linear_exactly(per_channel):
    """Quantized (dyadic) weights and integer spikes, as in QSD: folding is exact, outputs are identical."""
    D = 4
    spikes = integer_spikes((2, 5, 12), D)
    layer = nn.Linear(12, 7)
    with torch.no_grad():
        layer.weight.copy_(dyadic(layer.weight.shape, -1, 1, 1 / 16, 1))
        layer.bias.copy_(dyadic(layer.bias.shape, -1, 1, 1 / 16, 2))
    neuron = spikeops.IELIF(D=D, v_threshold=0.5, stateless=True, mprf=True, step_mode="m", backend="torch")
    if per_channel:
        neuron.mprf = M.MPRF(7)
    with torch.no_grad():
        neuron.mprf.a.copy_(dyadic(neuron.mprf.a.shape, 0.5, 2, 1 / 8, 3))
        neuron.mprf.b.copy_(dyadic(neuron.mprf.b.shape, -0.5, 0.5, 1 / 8, 4))
    before = neuron(layer(spikes))
    assert len(before.unique()) > 2
    folded = neuron.fold_mprf_into(layer)
    assert neuron.mprf is None
    assert torch.equal(neuron(folded(spikes)), before)


@pytest.mark.parametrize("conv", [nn.Conv1d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1, bias=False)])
def test_mprf_folds_into_conv(conv):
    """Arbitrary float values: the folded layer's output matches to rounding, and so do the spikes except where
    the membrane sits within rounding of a level boundary."""
    mprf = M.MPRF(6, channel_dim=1)
    with torch.no_grad():
        mprf.a.uniform_(0.5, 1.5)
        mprf.b.uniform_(-0.3, 0.3)
    x = torch.randn((8, 4) + (9,) * (conv.weight.dim() - 2))
    original = [p.detach().clone() for p in conv.parameters()]
    want = mprf(conv(x))
    got = M.fold_mprf(conv, mprf)(x)
    assert all(torch.equal(p, q) for p, q in zip(conv.parameters(), original)), "the original layer is untouched"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    theta = 0.25
    tie_distance = ((want / theta) - (want / theta).floor() - 0.5).abs()
    clear = tie_distance > 1e-4
    spikes = lambda u: M.multispike(u, 4, v_threshold=theta, backend="torch")  # noqa: E731
    assert torch.equal(spikes(got)[clear], spikes(want)[clear])


def test_mprf_is_learnable():
    neuron = spikeops.IELIF(D=4, mprf=True, step_mode="m", backend="torch")
    x = torch.rand(2, 3, 5) * 3
    neuron(x).sum().backward()
    assert neuron.mprf.a.grad is not None and neuron.mprf.a.grad.abs() > 0
    assert neuron.mprf.b.grad is not None and neuron.mprf.b.grad.abs() > 0


def test_mprf_errors():
    with pytest.raises(ValueError, match="num_channels: expected None or a positive int"):
        M.MPRF(0)
    with pytest.raises(TypeError, match="layer: expected one of"):
        M.fold_mprf(nn.ReLU(), M.MPRF())
    with pytest.raises(ValueError, match="mprf: has 3 channels but layer has 7 output channels"):
        M.fold_mprf(nn.Linear(2, 7), M.MPRF(3))
    with pytest.raises(ValueError, match="expected 3 channels along dim -1"):
        M.MPRF(3)(torch.ones(2, 4))
    with pytest.raises(ValueError, match="mprf: this IELIF has no MPRF"):
        spikeops.IELIF().fold_mprf_into(nn.Linear(2, 2))


# ---------------------------------------------------------------- bad input, raised before any kernel
X = torch.ones(3, 4)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "auto"])
@pytest.mark.parametrize("call, error, message", [
    (lambda b: M.ielif(X, D=0, backend=b), ValueError, "D: expected an integer number of spike levels in 1..127, got 0"),
    (lambda b: M.ielif(X, D=-2, backend=b), ValueError, "got -2"),
    (lambda b: M.ielif(X, D=2.5, backend=b), ValueError, "got 2.5"),
    (lambda b: M.ielif(X, D=128, backend=b), ValueError, "got 128"),
    (lambda b: M.ielif(X, D=True, backend=b), ValueError, "got True"),
    (lambda b: M.ielif(X, D=float("nan"), backend=b), ValueError, "got nan"),
    (lambda b: M.ielif(X, D="4", backend=b), ValueError, "got '4'"),
    (lambda b: M.ielif(X, v_threshold=0.0, backend=b), ValueError, "v_threshold: must be > 0"),
    (lambda b: M.ielif(X, v_threshold=-1.0, backend=b), ValueError, "v_threshold: must be > 0"),
    (lambda b: M.ielif(X, rounding="nearest", backend=b), ValueError, "rounding: expected one of ('half_up', 'half_even')"),
    (lambda b: M.ielif(X, norm=0, backend=b), ValueError, "norm: expected None or a finite number > 0"),
    (lambda b: M.ielif(X, tau=1.0, backend=b), ValueError, "tau: must be > 1"),
    (lambda b: M.multispike(X, 0, backend=b), ValueError, "D: expected an integer"),
    (lambda b: M.multispike(X, 4, v_threshold=0.0, backend=b), ValueError, "v_threshold: must be > 0"),
    (lambda b: M.multispike(X.int(), 4, backend=b), TypeError, "x: expected a floating dtype"),
    (lambda b: M.bipolar_lif(X, v_threshold=0.0, backend=b), ValueError, "v_threshold: must be > 0"),
    (lambda b: M.bipolar_lif(X, surrogate_function="Tanh", backend=b), ValueError, "surrogate_function: unknown"),
])
def test_bad_input_raises_before_launch(no_kernel, backend, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(backend)


@pytest.mark.parametrize("make, message", [
    (lambda: spikeops.IELIF(D=0), "D: expected an integer"),
    (lambda: spikeops.IELIF(D=3.5), "D: expected an integer"),
    (lambda: spikeops.IELIF(v_threshold=0.0), "v_threshold: must be > 0"),
    (lambda: spikeops.IELIF(rounding="up"), "rounding"),
    (lambda: spikeops.IELIF(stateless=True, store_v_seq=True), "store_v_seq"),
    (lambda: spikeops.Multispike(D=200), "D: expected an integer"),
    (lambda: spikeops.Multispike(norm=-1), "norm"),
    (lambda: spikeops.BipolarLIF(v_threshold=-1.0), "v_threshold: must be > 0"),
    (lambda: spikeops.BipolarLIF(tau=0.5), "tau: must be > 1"),
])
def test_module_arguments_checked_at_construction(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_make_config_guards_int8_storage():
    """The shared config refuses levels that int8 spike storage cannot hold, whoever builds it."""
    from spikeops.ops.neuron.config import FIRE_INTEGER, make_config
    base = dict(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=None, detach_reset=False, surrogate=0,
                alpha=4.0, fire_mode=FIRE_INTEGER)
    assert make_config(levels=127, **base).levels == 127
    for levels in (0, 128, 2.5):
        with pytest.raises(ValueError, match="levels: expected an integer D in 1..127"):
            make_config(levels=levels, **base)
