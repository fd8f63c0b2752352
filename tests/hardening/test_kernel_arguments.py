"""Issue 18, item 8: the registered ops (C++ and Triton) check their size and stride arguments against their
tensors before any launch: a geometry, shape list or tensor that does not match raises a clear error naming
the argument, never a crash or an out-of-bounds access."""
import pytest
import torch

import spikeops
from spikeops.ops.attention import attention_config
import spikeops.ops.attention.spike_gate  # noqa: F401  (registers the Triton ops)
import spikeops.ops.attention.ssa  # noqa: F401
import spikeops.ops.bipolar_attention.op  # noqa: F401
import spikeops.ops.experts_mixture.op  # noqa: F401

ops = torch.ops.spikeops
SUFFIXES = ([""] if spikeops.backends.extension_available() else []) + ["_triton"]
ERRORS = (RuntimeError, ValueError)  # the C++ ops raise RuntimeError (TORCH_CHECK), the Triton ops ValueError
CFG = attention_config().as_list()
A = torch.ones(2, 4, 8)  # T = 2, one slice of 32 elements
GOOD = [4, 8, 1, 8, 1, 0]  # M = 4 neurons summing R = 8 contiguous elements


def _state(geometry):
    return torch.zeros(2, geometry[0]), torch.zeros(2, geometry[0], dtype=torch.int8)


BAD_GEOMETRIES = {
    "issue: huge stride_g": ([4, 8, 1, 10**9, 1, 0], "stride_g"),
    "stride_r past the slice": ([4, 8, 1, 8, 5, 0], "stride_r"),
    "negative stride": ([4, 8, 1, -8, 1, 0], "stride_g"),
    "overlapping neurons": ([4, 8, 1, 1, 1, 0], "stride_g"),
    "lane stride": ([4, 8, 2, 16, 2, 3], "stride_l"),
    "too many neurons": ([8, 8, 1, 8, 1, 0], "T*M*R"),
    "overflowing M*R": ([2**62, 2**62, 1, 2**62, 1, 0], "T*M*R"),
    "L not dividing M": ([4, 8, 3, 24, 3, 1], "L"),
    "negative M": ([-4, -8, 1, -8, 1, 0], "M"),
    "five fields": ([4, 8, 1, 8, 1], "6 fields"),
}


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("label", BAD_GEOMETRIES)
def test_spike_gate_refuses_a_geometry_that_does_not_fit(label, suffix):
    geometry, named = BAD_GEOMETRIES[label]
    forward = getattr(ops, "spike_gate_forward" + suffix)
    with pytest.raises(ERRORS, match="geometry") as raised:
        forward(A, None, A, geometry, CFG)
    assert named in str(raised.value), str(raised.value)
    backward = getattr(ops, "spike_gate_backward" + suffix)
    h, spikes = _state(GOOD)
    with pytest.raises(ERRORS, match="geometry"):
        backward(A, A, None, A, h, spikes, geometry, CFG)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_spike_gate_accepts_every_layout_the_operators_use(suffix):
    """The four geometries of spikeops/ops/attention/layout.py (token/channel sums, [C, N] or [N, d] layouts)."""
    from spikeops.ops.attention.layout import CHANNEL, TOKEN, AttentionShape, geometry
    for split in (False, True):
        shape = AttentionShape(2, 3, 2, 5, 4, split)
        x = torch.rand(2, 3, 2, 5, 4) if split else torch.rand(2, 3, 8, 5)
        for reduce in (TOKEN, CHANNEL):
            out, h, spikes = getattr(ops, "spike_gate_forward" + suffix)(x, None, x, geometry(shape, reduce).as_list(), CFG)
            assert out.shape == x.shape


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_spike_gate_refuses_mismatched_tensors(suffix):
    forward = getattr(ops, "spike_gate_forward" + suffix)
    backward = getattr(ops, "spike_gate_backward" + suffix)
    h, spikes = _state(GOOD)
    cases = [
        (lambda: forward(A, None, torch.ones(2, 4, 7), GOOD, CFG), "gate"),
        (lambda: forward(A, torch.ones(2, 4, 7), A, GOOD, CFG), "a2"),
        (lambda: forward(A.transpose(1, 2).contiguous().transpose(1, 2), None, A, GOOD, CFG), "contiguous"),
        (lambda: backward(torch.ones(2, 4, 7), A, None, A, h, spikes, GOOD, CFG), "grad_out"),
        (lambda: backward(A, A, None, A, torch.zeros(2, 3), spikes, GOOD, CFG), "membrane|h:"),
        (lambda: backward(A, A, None, A, h, torch.zeros(2, 4), GOOD, CFG), "spikes"),
    ]
    for call, named in cases:
        with pytest.raises(ERRORS, match=named):
            call()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_experts_mixture_refuses_mismatched_tensors(suffix):
    forward = getattr(ops, "experts_mixture_forward" + suffix)
    backward = getattr(ops, "experts_mixture_backward" + suffix)
    r, a = torch.ones(3, 4), torch.ones(3, 4, 5)
    for call, named in [(lambda: forward(r, torch.ones(3, 5, 5)), "experts"),
                        (lambda: forward(torch.ones(3, 4, 1), a), "router"),
                        (lambda: forward(r, torch.ones(3, 5, 4).transpose(1, 2)), "experts"),
                        (lambda: backward(torch.ones(3, 6), r, a), "grad_y"),
                        (lambda: backward(torch.ones(4, 5), r, a), "grad_y")]:
        with pytest.raises(ERRORS, match=named):
            call()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_bipolar_attention_refuses_mismatched_tensors(suffix):
    forward = getattr(ops, "bipolar_attention_forward" + suffix)
    backward = getattr(ops, "bipolar_attention_backward" + suffix)
    q, v = torch.ones(2, 5, 4), torch.ones(2, 5, 3)
    y, lse, rowsum = forward(q, q, v, 1.0, 1, True)
    for call, named in [(lambda: forward(q, torch.ones(2, 6, 4), v, 1.0, 1, True), "k"),
                        (lambda: forward(q, q, torch.ones(2, 4, 3), 1.0, 1, True), "v"),
                        (lambda: forward(q, q, v, 1.0, 7, True), "norm"),
                        (lambda: backward(torch.ones(2, 5, 2), q, q, v, y, lse, rowsum, 1.0, 1), "dy"),
                        (lambda: backward(y, q, q, v, y, lse[:, :3].contiguous(), rowsum, 1.0, 1), "statistics|lse")]:
        with pytest.raises(ERRORS, match=named):
            call()


def test_triton_ssa_refuses_a_shape_that_does_not_fit():
    q = torch.ones(2, 1, 4, 3)
    good = [2, 1, 2, 3, 2, 0]
    out, _ = ops.ssa_forward_triton(q, q, q, good, CFG, 0.125, True, 1)
    assert out.shape == q.shape
    for shape, bound, named in [([2, 1, 2, 30, 2, 0], 1, "shape"), ([2, 1, 2, 3, 2, 5], 1, "shape"),
                                ([2, 1, 2, 3], 1, "shape"), (good, 300, "integer_bound")]:
        with pytest.raises(ValueError, match=named):
            ops.ssa_forward_triton(q, q, q, shape, CFG, 0.125, True, bound)
    with pytest.raises(ValueError, match="k"):
        ops.ssa_forward_triton(q, torch.ones(2, 1, 4, 4), q, good, CFG, 0.125, True, 1)
