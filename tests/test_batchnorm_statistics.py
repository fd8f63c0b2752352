"""spikeops::batch_norm_statistics (csrc/batchnorm_stats/) and its Python entry point
(spikeops.ops.batchnorm_neuron.statistics): ATen's float32 training batch-norm statistics and running-statistics
update, bit for bit, and the fused BatchNorm -> neuron forward that uses them."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from spikeops.ops._dispatch import optional_op
from spikeops.ops.batchnorm_neuron import statistics

pytestmark = pytest.mark.skipif(optional_op("batch_norm_statistics") is None,
                                reason="the compiled extension has no batch_norm_statistics kernel")

def _aten(x, running_mean, running_var, momentum, eps):
    stats = [None if s is None else s.clone() for s in (running_mean, running_var)]
    if stats[0] is None and stats[1] is None:
        _, mean, invstd = torch.ops.aten._native_batch_norm_legit.no_stats(x, None, None, True, momentum, eps)
    else:
        _, mean, invstd = torch.ops.aten._native_batch_norm_legit(x, None, None, stats[0], stats[1], True, momentum,
                                                                  eps)
    return mean, invstd, *stats


def _ours(x, running_mean, running_var, momentum, eps):
    stats = [None if s is None else s.clone() for s in (running_mean, running_var)]
    mean, invstd = torch.ops.spikeops.batch_norm_statistics(x, stats[0], stats[1], momentum, eps)
    return mean, invstd, *stats


def _assert_identical(got, expected):
    for a, b in zip(got, expected):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _input(shape, dtype, seed=0, spread=4.0):
    """Values over many magnitudes, so that every sum rounds and a different summation order shows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * torch.exp(spread * torch.randn(shape, generator=g,
                                                                                              dtype=torch.float64))
    return (x + 0.5).to(dtype)


@pytest.mark.parametrize("shape", [(8, 384, 16, 16), (8, 48, 64, 64), (2, 3, 5), (1, 7, 2), (4, 19, 3, 3, 2),
                                   (3, 1, 10), (5, 9, 1, 2)])
@pytest.mark.parametrize("momentum", [0.1, 1 / 3, 0.0, 1.0])
def test_bit_identical_to_aten(shape, momentum):
    x = _input(shape, torch.float32)
    g = torch.Generator().manual_seed(1)
    running = [torch.rand(shape[1], generator=g) + 0.5 for _ in range(2)]
    _assert_identical(_ours(x, *running, momentum, 1e-5), _aten(x, *running, momentum, 1e-5))


def test_without_running_statistics_and_with_one():
    """No running statistics (aten's no_stats variant), or only one of them: each channel's update is its own, so
    one alone moves as it does beside the other."""
    x = _input((4, 10, 6, 6), torch.float32, seed=2)
    _assert_identical(_ours(x, None, None, 0.2, 1e-3), _aten(x, None, None, 0.2, 1e-3))
    mean, var = torch.rand(10), torch.rand(10) + 1
    expected = _aten(x, mean, var, 0.2, 1e-3)
    _assert_identical(_ours(x, mean, None, 0.2, 1e-3), (*expected[:3], None))
    _assert_identical(_ours(x, None, var, 0.2, 1e-3), (*expected[:2], None, expected[3]))


def test_constant_channels_zero_eps_and_one_sample():
    """Zero variance (invstd 1/sqrt(eps), or 0 with eps 0 as ATen's rule has it) and a single element per channel
    besides the batch (count - 1 = 0 in the unbiased running variance: inf or nan, as ATen gives)."""
    x = torch.ones(3, 4, 5)
    x[:, 1] = 2.5
    for eps in (1e-5, 0.0):
        _assert_identical(_ours(x, torch.zeros(4), torch.ones(4), 0.1, eps), _aten(x, torch.zeros(4), torch.ones(4),
                                                                                  0.1, eps))
    single = _input((1, 3, 2), torch.float32)[:, :, :1].contiguous().expand(1, 3, 2).contiguous()
    _assert_identical(_ours(single[:, :, :2], torch.zeros(3), torch.ones(3), 0.1, 1e-5),
                      _aten(single[:, :, :2], torch.zeros(3), torch.ones(3), 0.1, 1e-5))


def test_nan_and_inf_propagate_as_in_aten():
    x = _input((2, 5, 4, 4), torch.float32)
    x[0, 1, 2, 3] = float("nan")
    x[1, 3, 0, 0] = float("inf")
    _assert_identical(_ours(x, torch.zeros(5), torch.ones(5), 0.1, 1e-5), _aten(x, torch.zeros(5), torch.ones(5), 0.1,
                                                                                1e-5))


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 5), channels=st.integers(1, 20), rest=st.lists(st.integers(1, 7), min_size=1, max_size=3),
       momentum=st.floats(0, 1), seed=st.integers(0, 2 ** 16))
def test_random_shapes_match_aten(batch, channels, rest, momentum, seed):
    shape = (batch, channels, *rest)
    if torch.Size(rest).numel() < 2:
        rest = [*rest, 2]
        shape = (batch, channels, *rest)
    x = _input(shape, torch.float32, seed=seed, spread=2.0)
    running = [torch.rand(channels) for _ in range(2)]
    _assert_identical(_ours(x, *running, momentum, 1e-5), _aten(x, *running, momentum, 1e-5))


BAD = [
    ("input", dict(x=torch.zeros(2, 3, 4, dtype=torch.float16))),
    ("input", dict(x=torch.zeros(2, 3, 4, dtype=torch.float64))),
    ("input", dict(x=torch.zeros(2, 3))),
    ("input", dict(x=torch.zeros(0, 3, 4))),
    ("input", dict(x=torch.zeros(2, 3, 4).transpose(0, 2))),
    ("input", dict(x=torch.zeros(2, 3, 1, 1))),
    ("running_mean", dict(running_mean=torch.zeros(4))),
    ("running_mean", dict(running_mean=torch.zeros(3, dtype=torch.float64))),
    ("running_var", dict(running_var=torch.ones(3, 1))),
    ("running_var", dict(running_var=torch.zeros(6)[::2])),
    ("momentum", dict(momentum=float("nan"))),
    ("eps", dict(eps=-1.0)),
    ("eps", dict(eps=float("inf"))),
]


@pytest.mark.parametrize("name,bad", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_by_name(name, bad):
    args = dict(x=torch.zeros(2, 3, 4), running_mean=torch.zeros(3), running_var=torch.ones(3), momentum=0.1,
                eps=1e-5)
    args.update(bad)
    with pytest.raises(RuntimeError, match=name):
        torch.ops.spikeops.batch_norm_statistics(args["x"], args["running_mean"], args["running_var"],
                                                 args["momentum"], args["eps"])


def test_opcheck():
    x = _input((3, 5, 4, 4), torch.float32)
    for running in ((torch.zeros(5), torch.ones(5)), (None, None), (torch.zeros(5), None)):
        torch.library.opcheck(torch.ops.spikeops.batch_norm_statistics.default, (x, *running, 0.1, 1e-5))


def test_entry_point_applies_only_where_the_kernel_sums_as_aten():
    """``batch_statistics`` runs the kernel on contiguous CPU float32 [N, C, *] input with more than one element
    per sample and channel, and otherwise returns None without touching the running statistics."""
    running = [torch.zeros(4), torch.ones(4)]
    for x in (torch.randn(2, 4), torch.randn(2, 4, 1, 1), torch.randn(2, 4, 3).to(torch.bfloat16),
              torch.randn(2, 4, 3, dtype=torch.float64),
              torch.randn(3, 4, 2).transpose(0, 2), torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)):
        before = [s.clone() for s in running]
        assert statistics.batch_statistics(x, *running, 0.1, 1e-5) is None
        _assert_identical(running, before)
    x = _input((2, 4, 3, 3), torch.float32)
    _assert_identical(statistics.batch_statistics(x, *running, 0.1, 1e-5), _aten(x, *running, 0.1, 1e-5)[:2])


class _Calls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def test_fused_batchnorm_neuron_forward_uses_the_kernel_and_matches_nn_batchnorm():
    """The fused operator's CPU training forward takes its statistics from the kernel (no ATen batch norm, in
    forward or backward), with the spikes, gradients and running statistics of nn.BatchNorm2d -> LIF."""
    import spikeops
    from torch import nn

    x = _input((4, 2, 6, 5, 5), torch.float32, spread=0.5).requires_grad_(True)
    bn = nn.BatchNorm2d(6)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.2, 0.2)
    reference = bn.__class__(6)
    reference.load_state_dict(bn.state_dict())
    from spikeops.nn.batchnorm_fusion import batchnorm_then_neuron
    from spikeops.ops.batchnorm_neuron import op

    lif = spikeops.nn.LIFNeuron(backend="cpu")
    if not (statistics._kernel_reproduces_aten() and op._saved_statistics_reproduce(torch.float32)):  # probed here
        pytest.xfail("this ATen build's float32 batch norm is not reproduced by the kernel: the fused op keeps ATen's")
    with (calls := _Calls()):
        out = batchnorm_then_neuron(bn, lif, x)
        out.sum().backward()
    assert "spikeops::batch_norm_statistics" in calls.names
    assert not any("native_batch_norm_legit" in name for name in calls.names)
    grad = x.grad.clone()
    x.grad = None
    expected = spikeops.nn.LIFNeuron(backend="torch")(reference(x.flatten(0, 1)).view(x.shape))
    expected.sum().backward()
    assert torch.equal(out, expected)
    torch.testing.assert_close(grad, x.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(bn, name), getattr(reference, name))
