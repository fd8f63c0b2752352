"""spikeops::max_pool2d_values / max_pool2d_recompute_backward (csrc/max_pool/, spikeops.ops.max_pool): the
values of aten.max_pool2d and the gradient of aten.max_pool2d_with_indices_backward with recomputed indices,
bit for bit (ties, -0.0/+0.0, NaN payloads, ±inf, padding, ceil mode, dilation), every bad argument refused by
name, and the two recompute paths (spike_max_pool2d, batchnorm_neuron(pool=)) routed to them on CPU."""
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import spikeops
from spikeops.ops import max_pool

pytestmark = pytest.mark.skipif(not spikeops.backends.extension_available() or
                                getattr(torch.ops.spikeops, "max_pool2d_values", None) is None,
                                reason="spikeops._C not built with the max-pool kernels")

DTYPES = (torch.float32, torch.float64)


def values_op(x, *args):
    return torch.ops.spikeops.max_pool2d_values(x, *args)


def backward_op(grad, x, *args):
    return torch.ops.spikeops.max_pool2d_recompute_backward(grad, x, *args)


def aten_backward(grad, x, *args):
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, *args)
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *args, indices)


def indices_inside(x, *args) -> bool:
    """Whether every index ATen computes lies in its plane: a window with no element inside the input gets an
    index past it, whose backward writes out of bounds (undefined behaviour, not a reference)."""
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, *args)
    return indices.numel() == 0 or int(indices.max()) < x.shape[-2] * x.shape[-1]


def assert_bits_equal(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    as_int = {torch.float32: torch.int32, torch.float64: torch.int64}[expected.dtype]
    same = actual.contiguous().view(as_int) == expected.contiguous().view(as_int)
    assert bool(same.all()), f"{int((~same).sum())} of {same.numel()} elements differ in their bits"


def special_values(x, generator, fraction=0.2):
    """x with a fraction of its elements replaced by -0.0, +0.0, ±inf and NaNs of different payloads."""
    nan_payloads = torch.tensor([float("nan"), -float("nan")], dtype=x.dtype)
    specials = torch.cat([torch.tensor([-0.0, 0.0, float("inf"), -float("inf")], dtype=x.dtype), nan_payloads])
    if x.dtype == torch.float32:  # a NaN with another mantissa, so that which NaN wins shows
        specials = torch.cat([specials, torch.tensor([0x7FC00123], dtype=torch.int32).view(torch.float32)])
    where = torch.rand(x.shape, generator=generator, dtype=torch.float64) < fraction
    pick = torch.randint(0, specials.numel(), x.shape, generator=generator)
    return torch.where(where, specials[pick], x)


def check_against_aten(x, args, generator):
    assert_bits_equal(values_op(x, *args), torch.ops.aten.max_pool2d(x, *args))
    if not indices_inside(x, *args):
        return
    out_shape = torch.ops.aten.max_pool2d(x, *args).shape
    # Random gradients (a sum in another order rounds differently) with some -0.0 (0.0 + -0.0 is +0.0).
    grad = torch.randn(out_shape, generator=generator, dtype=x.dtype)
    grad[torch.rand(out_shape, generator=generator) < 0.1] = -0.0
    assert_bits_equal(backward_op(grad, x, *args), aten_backward(grad, x, *args))


# (kernel_size, stride, padding, dilation, ceil_mode)
CONFIGS = [
    ([3, 3], [2, 2], [1, 1], [1, 1], False),  # QKFormer's
    ([3, 3], [2, 2], [1, 1], [1, 1], True),
    ([1, 1], [1, 1], [0, 0], [1, 1], False),
    ([2, 2], [], [0, 0], [1, 1], False),  # stride omitted: the kernel size
    ([2, 2], [2, 2], [1, 1], [1, 1], True),
    ([3, 3], [1, 1], [1, 1], [1, 1], False),  # every element in up to 9 windows
    ([5, 5], [2, 2], [2, 2], [1, 1], True),
    ([2, 3], [1, 2], [1, 1], [1, 1], False),  # non-square
    ([3, 2], [3, 1], [0, 1], [2, 1], True),
    ([3, 3], [2, 2], [1, 1], [2, 2], False),  # dilation
    ([2, 2], [3, 3], [1, 0], [1, 1], True),  # stride past the kernel: gaps between windows
    ([4, 4], [3, 3], [2, 2], [2, 3], True),
    ([7, 1], [1, 1], [3, 0], [1, 1], False),
    ([3], [2], [1], [1], False),  # one int for both sides
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=[str(c) for c in CONFIGS])
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 2, 16, 16), (2, 1, 5, 37), (3, 7, 8)])
def test_bit_identical_to_aten(shape, config, dtype):
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, config)).encode()))
    try:
        torch.ops.aten.max_pool2d(torch.empty(shape), *config)
    except RuntimeError:
        pytest.skip("ATen refuses this shape/config pair too")
    continuous = torch.randn(shape, generator=g, dtype=dtype)
    quantised = torch.randint(-2, 3, shape, generator=g).to(dtype) / 2  # ties everywhere, -0.0 among them
    check_against_aten(continuous, config, g)
    check_against_aten(quantised, config, g)
    check_against_aten(special_values(quantised, g), config, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 48, 64, 64), (4, 96, 32, 32), (8, 192, 16, 16)])
def test_qkformer_shapes(shape, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-4, 5, shape, generator=g).to(dtype)  # BatchNorm of spikes: few values, many ties
    check_against_aten(x, ([3, 3], [2, 2], [1, 1], [1, 1], False), g)


def test_signed_zeros_and_nans_follow_atens_rule():
    # Window 0: -0.0 first, +0.0 later -> -0.0 (equal, the first stays). Window 1: two NaNs -> the last one.
    nan_a = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    nan_b = torch.tensor([0x7FC00002], dtype=torch.int32).view(torch.float32)
    x = torch.cat([torch.tensor([-0.0, 0.0]), nan_a, torch.tensor([1.0]), nan_b, torch.tensor([5.0])]).view(1, 1, 1, 6)
    args = ([1, 2], [1, 2], [0, 0], [1, 1], False)
    out = values_op(x, *args)
    assert_bits_equal(out, torch.ops.aten.max_pool2d(x, *args))
    assert torch.signbit(out[0, 0, 0, 0]) and out[0, 0, 0, 2].view(torch.int32) == 0x7FC00002
    grad = torch.ones(1, 1, 1, 3)
    assert_bits_equal(backward_op(grad, x, *args), aten_backward(grad, x, *args))


def test_all_minus_inf_window_routes_to_its_first_element():
    x = torch.full((1, 1, 4, 4), -float("inf"))
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    grad = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    assert_bits_equal(values_op(x, *args), torch.ops.aten.max_pool2d(x, *args))
    assert_bits_equal(backward_op(grad, x, *args), aten_backward(grad, x, *args))


def test_window_without_input_elements():
    # Dilation 4 over a 2-wide input with padding 1 in ceil mode: the one window's taps (-1, 3) miss the input.
    # ATen returns -inf and an index past the plane (its backward would write out of bounds); here the value
    # is the same and that gradient is dropped.
    x = torch.randn(2, 3, 2, 2)
    args = ([2, 2], [2, 2], [1, 1], [4, 4], True)
    out = values_op(x, *args)
    assert_bits_equal(out, torch.ops.aten.max_pool2d(x, *args))
    assert bool((out == -float("inf")).all())
    assert torch.equal(backward_op(torch.ones_like(out), x, *args), torch.zeros_like(x))


def test_window_without_input_columns_whose_index_lands_in_the_plane():
    # Columns miss the input but the rows do not: ATen's index (first row) * W + (a column past the input)
    # lands on an element of the next row, and its backward adds there; so does this one. The last row's
    # index lies past the plane (ATen would write out of bounds): dropped.
    x = torch.randn(1, 1, 3, 2)
    args = ([1, 2], [1, 2], [0, 1], [1, 4], True)
    out, indices = torch.ops.aten.max_pool2d_with_indices(x, *args)
    assert_bits_equal(values_op(x, *args), out)
    grad = torch.randn(out.shape)
    expected = torch.zeros(x.numel())
    for index, g in zip(indices.flatten().tolist(), grad.flatten()):  # ATen's additions, in its order
        if index < x.numel():
            expected[index] += g
    assert 0 < int((indices < x.numel()).sum()) < indices.numel()
    assert_bits_equal(backward_op(grad, x, *args), expected.view(x.shape))


def test_empty_batch_and_unbatched_input():
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    for x in (torch.randn(0, 3, 8, 8), torch.randn(3, 8, 8), torch.randn(1, 1, 1, 1)):
        check_against_aten(x, args if x.shape[-1] > 1 else ([1, 1], [1, 1], [0, 0], [1, 1], False),
                           torch.Generator().manual_seed(0))


def test_non_contiguous_input_and_grad():
    g = torch.Generator().manual_seed(3)
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    x = torch.randn(2, 5, 12, 12, generator=g).to(memory_format=torch.channels_last)
    sliced = torch.randn(2, 5, 12, 24, generator=g)[..., ::2]
    for inp in (x, sliced):
        assert_bits_equal(values_op(inp, *args), torch.ops.aten.max_pool2d(inp, *args))
        grad = torch.randn(2, 6, 6, 5, generator=g).permute(0, 3, 1, 2)
        assert_bits_equal(backward_op(grad, inp, *args), aten_backward(grad.contiguous(), inp.contiguous(), *args))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_arguments_match_aten(data):
    pair = lambda low, high: st.lists(st.integers(low, high), min_size=1, max_size=2)  # noqa: E731
    kernel = data.draw(pair(1, 5), label="kernel_size")
    stride = data.draw(st.one_of(st.just([]), pair(1, 4)), label="stride")
    padding = data.draw(pair(0, 2), label="padding")
    dilation = data.draw(pair(1, 3), label="dilation")
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    batched = data.draw(st.booleans(), label="batched")
    shape = (data.draw(st.integers(0, 2)),) if batched else ()
    shape += (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 40)))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    levels = data.draw(st.sampled_from([2, 3, 0]), label="levels")  # 0: continuous
    args = (kernel, stride, padding, dilation, ceil_mode)
    try:
        torch.ops.aten.max_pool2d(torch.empty(shape, dtype=dtype), *args)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            values_op(torch.empty(shape, dtype=dtype), *args)
        return
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    x = torch.randn(shape, generator=g, dtype=dtype)
    if levels:
        x = torch.randint(-levels, levels + 1, shape, generator=g).to(dtype) / levels
    if data.draw(st.booleans(), label="specials"):
        x = special_values(x, g)
    check_against_aten(x, args, g)


# ----------------------------------------------------------------------------------------- bad arguments
GOOD = dict(kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], dilation=[1, 1], ceil_mode=False)
BAD = [
    ("input", dict(x=torch.zeros(2, 3, 8, 8, dtype=torch.int32))),
    ("input", dict(x=torch.zeros(2, 3, 8, 8, dtype=torch.float16))),
    ("input", dict(x=torch.zeros(8, 8))),
    ("input", dict(x=torch.zeros(1, 2, 3, 8, 8))),
    ("input", dict(x=torch.zeros(2, 0, 8, 8))),
    ("input", dict(x=torch.zeros(0, 8, 8))),
    ("kernel_size", dict(kernel_size=[0, 3])),
    ("kernel_size", dict(kernel_size=[3, 3, 3])),
    ("kernel_size", dict(kernel_size=[])),
    ("kernel_size", dict(kernel_size=[2**31, 3])),
    ("stride", dict(stride=[0, 1])),
    ("stride", dict(stride=[1, 1, 1])),
    ("padding", dict(padding=[-1, 0])),
    ("padding", dict(padding=[2, 1])),  # more than half the kernel
    ("padding", dict(padding=[1, 1, 1])),
    ("dilation", dict(dilation=[1, 0])),
    ("dilation", dict(dilation=[])),
    ("too small", dict(x=torch.zeros(1, 1, 2, 2), padding=[0, 0], stride=[1, 1])),
]


def _call(which, x=None, grad=None, **overrides):
    x = torch.zeros(2, 3, 8, 8) if x is None else x
    kw = {**GOOD, **overrides}
    args = (kw["kernel_size"], kw["stride"], kw["padding"], kw["dilation"], kw["ceil_mode"])
    if which == "values":
        return values_op(x, *args)
    grad = torch.zeros(2, 3, 4, 4, dtype=x.dtype) if grad is None else grad
    return backward_op(grad, x, *args)


@pytest.mark.parametrize("which", ["values", "backward"])
@pytest.mark.parametrize("name,bad", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_by_name(which, name, bad):
    with pytest.raises(RuntimeError, match=name):
        _call(which, **bad)


@pytest.mark.parametrize("grad", [torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 16), torch.zeros(2, 3, 4, 4).double()])
def test_bad_grad_output_is_refused_by_name(grad):
    with pytest.raises(RuntimeError, match="grad_output"):
        _call("backward", grad=grad)


def test_opcheck():
    g = torch.Generator().manual_seed(0)
    for dtype in DTYPES:
        x = torch.randn(2, 3, 9, 10, generator=g, dtype=dtype)
        for args in CONFIGS[:3] + CONFIGS[7:10]:
            torch.library.opcheck(torch.ops.spikeops.max_pool2d_values.default, (x, *args))
            grad = torch.randn(torch.ops.aten.max_pool2d(x, *args).shape, generator=g, dtype=dtype)
            torch.library.opcheck(torch.ops.spikeops.max_pool2d_recompute_backward.default, (grad, x, *args))


# ----------------------------------------------------------------------------------------- routing
class _RecordOps(TorchDispatchMode):
    """The ops called (``names``), and those called on CPU tensors (``cpu_names``; shape rules run on meta)."""

    def __init__(self):
        super().__init__()
        self.names, self.cpu_names = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        if any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args):
            self.cpu_names.append(func.name())
        return func(*args, **(kwargs or {}))


def test_python_entry_points_use_the_kernels_on_cpu_and_aten_elsewhere():
    x = torch.randn(2, 3, 8, 8)
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    grad = torch.randn(2, 3, 4, 4)
    with (recorder := _RecordOps()):
        max_pool.max_pool2d_values(x, *args)
        max_pool.max_pool2d_recompute_backward(grad, x, *args)
    assert recorder.names == ["spikeops::max_pool2d_values", "spikeops::max_pool2d_recompute_backward"]
    half = x.to(torch.bfloat16)
    with (recorder := _RecordOps()):
        out = max_pool.max_pool2d_values(half, *args)
        grad_half = max_pool.max_pool2d_recompute_backward(grad.to(torch.bfloat16), half, *args)
    assert not any(name.startswith("spikeops::") for name in recorder.names)
    assert torch.equal(out, torch.ops.aten.max_pool2d(half, *args))
    assert torch.equal(grad_half, aten_backward(grad.to(torch.bfloat16), half, *args))


def test_spike_max_pool2d_recompute_routes_to_the_kernels():
    from spikeops.ops.spike_pack import spike_max_pool2d

    g = torch.Generator().manual_seed(0)
    x = (torch.randint(-2, 3, (2, 4, 10, 10), generator=g) / 2).requires_grad_()
    with (recorder := _RecordOps()):
        out = spike_max_pool2d(x, 3, 2, 1, recompute_indices=True)
        grad = torch.randn(out.shape, generator=g)
        (grad_x,) = torch.autograd.grad(out, x, grad)
    assert "spikeops::max_pool2d_values" in recorder.names
    assert "spikeops::max_pool2d_recompute_backward" in recorder.names
    assert not {"aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"} & set(recorder.cpu_names)
    x_ref = x.detach().requires_grad_()
    out_ref = torch.nn.functional.max_pool2d(x_ref, 3, 2, 1)
    (grad_ref,) = torch.autograd.grad(out_ref, x_ref, grad)
    assert_bits_equal(out, out_ref)
    assert_bits_equal(grad_x, grad_ref)


def test_batchnorm_neuron_pool_routes_to_the_kernels():
    from spikeops.ops.batchnorm_neuron import batchnorm_neuron
    from spikeops.ops.neuron.config import make_config

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, 8, 8, generator=g).requires_grad_()
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=False, surrogate=1, alpha=2.0)
    with (recorder := _RecordOps()):
        spikes, _, _ = batchnorm_neuron(x, cfg=cfg, backend="cpu", pool=dict(kernel_size=3, stride=2, padding=1))
        spikes.backward(torch.randn(spikes.shape, generator=g))
    assert "spikeops::max_pool2d_values" in recorder.names
    assert "spikeops::max_pool2d_recompute_backward" in recorder.names
    assert not {"aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"} & set(recorder.cpu_names)
