"""Spiking attention operators: every fused backend against the pure-PyTorch reference over layouts,
shapes (odd N and d, heads 1..8, T 1..8), dtypes and neuron options; float64 gradient checks; errors."""
import itertools

import pytest
import torch

from spikeops.ops import attention as A
from spikeops.surrogate import ATan

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

GATE_OPS = {
    "token": lambda q, k, v, heads, **o: A.qk_token_attention(q, k, heads, **o),
    "channel": lambda q, k, v, heads, **o: A.qk_channel_attention(q, k, heads, **o),
    "sdsa_code": lambda q, k, v, heads, **o: A.spike_driven_attention(q, k, v, heads, form="code", **o),
    "sdsa_paper": lambda q, k, v, heads, **o: A.spike_driven_attention(q, k, v, heads, form="paper", **o),
}


def spike_counts(shape, rate, generator, high=1):
    """Binary spikes, or small integer counts (SEW residual sums) when high > 1."""
    fired = (torch.rand(shape, generator=generator) < rate).float()
    return fired if high == 1 else fired * torch.randint(1, high + 1, shape, generator=generator).float()


def make_qkv(T, B, h, N, d, split, dtype=torch.float32, device="cpu", high=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (T, B, h, N, d) if split else (T, B, h * d, N)
    return [spike_counts(shape, rate, g, high).to(dtype).to(device) for rate in (0.3, 0.5, 0.5)]


def run(op, backend, q, k, v, heads, **opts):
    """Output and (q, k, v) gradients of a random linear loss."""
    leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v)]
    out = GATE_OPS[op](*leaves, heads, backend=backend, **opts)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    grads = torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
    return [t.detach().float().cpu() for t in (out, *grads)]


def assert_matches(got, want, atol=1e-5, rtol=1e-5):
    assert torch.equal(got[0], want[0]), "outputs differ"
    for name, g, w in zip("qkv", got[1:], want[1:]):
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m: f"grad {name}: {m}")


SHAPES = [  # T, B, h, N, d
    (1, 1, 1, 1, 1),
    (4, 2, 3, 7, 5),
    (2, 1, 8, 9, 3),
    (8, 1, 2, 33, 17),
    (3, 2, 6, 13, 16),
]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("op", list(GATE_OPS))
@pytest.mark.parametrize("split", [False, True], ids=["TBCN", "TBhNd"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gate_ops_match_reference(backend, op, split, shape):
    q, k, v = make_qkv(*shape, split, device=BACKEND_DEVICE[backend], high=2)
    heads = shape[2]
    want = run(op, "torch", q, k, v, heads)
    got = run(op, backend, q, k, v, heads)
    assert_matches(got, want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("op", list(GATE_OPS))
@pytest.mark.parametrize("opts", [
    dict(v_reset=None), dict(detach_reset=False), dict(v_reset=-0.5, detach_reset=False, tau=3.0),
    dict(surrogate_function=ATan(), v_threshold=1.0), dict(surrogate_function="Rect", v_threshold=2.0),
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_gate_ops_options_match_reference(backend, op, opts):
    q, k, v = make_qkv(5, 2, 2, 11, 3, split=False, device=BACKEND_DEVICE[backend], high=3)
    want = run(op, "torch", q, k, v, 2, **opts)
    assert want[0].count_nonzero() > 0 and (want[0] == 0).any(), "test input must both fire and stay silent"
    assert_matches(run(op, backend, q, k, v, 2, **opts), want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("op", list(GATE_OPS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gate_ops_half_precision(backend, op, dtype):
    q, k, v = make_qkv(3, 2, 4, 10, 8, split=True, dtype=dtype, device=BACKEND_DEVICE[backend], high=2)
    want = run(op, "torch", q, k, v, 4)
    got = run(op, backend, q, k, v, 4)
    assert_matches(got, want, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("op", list(GATE_OPS))
def test_gate_ops_float64_cpu(op):
    """Real-valued float64 inputs: the fused C++ op agrees with the reference to rounding."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.rand(4, 2, 6, 9, generator=g, dtype=torch.float64) for _ in range(3))
    want = run(op, "torch", q, k, v, 3, surrogate_function="ATan")
    got = run(op, "cpu", q, k, v, 3, surrogate_function="ATan")
    assert_matches(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("op", list(GATE_OPS))
def test_gradcheck_gate_operand(backend, op):
    """out is linear in the gated operand (K for Q-K attention, Q / V for SDSA), so its gradient is
    checked numerically; the surrogate path is piecewise constant and is checked against the reference."""
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.rand(3, 1, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    gated = {"token": 1, "channel": 1, "sdsa_code": 0, "sdsa_paper": 2}[op]

    def f(x):
        args = [q, k, v]
        args[gated] = x
        return GATE_OPS[op](*args, 2, backend=backend)

    assert torch.autograd.gradcheck(f, ([q, k, v][gated].clone().requires_grad_(True),), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_token_attention_fires_on_one_spike_at_t0(backend):
    """docs/attention.md (QKTA): with tau=2 and theta=0.5 a token fires at t=0 whenever its head has one Q spike."""
    device = BACKEND_DEVICE[backend]
    q = torch.zeros(1, 1, 4, 3, device=device)
    q[0, 0, 1, 0] = 1.0  # head 0 (channels 0-1), token 0
    k = torch.ones_like(q)
    out = A.qk_token_attention(q, k, 2, backend=backend)
    expected = torch.zeros_like(q)
    expected[0, 0, 0:2, 0] = 1.0
    assert torch.equal(out, expected)


@pytest.mark.parametrize("op", list(GATE_OPS))
def test_auto_backend_matches_reference(op):
    q, k, v = make_qkv(2, 2, 2, 5, 3, split=False)
    assert torch.equal(GATE_OPS[op](q, k, v, 2, backend="auto"), GATE_OPS[op](q, k, v, 2, backend="torch"))


def test_sdsa_forms_are_role_swaps():
    """docs/attention.md (SDSA): the paper form SN(sum Q*K)*V is the code form Q*SN(sum K*V) with Q and V relabelled."""
    q, k, v = make_qkv(3, 2, 2, 6, 4, split=False)
    paper = A.spike_driven_attention(q, k, v, 2, form="paper", backend="cpu")
    code = A.spike_driven_attention(v, k, q, 2, form="code", backend="cpu")
    assert torch.equal(paper, code)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("op", list(GATE_OPS))
def test_heads_must_divide_channels(op):
    q, k, v = make_qkv(2, 1, 1, 4, 6, split=False)
    with pytest.raises(ValueError, match="heads: must divide the channel count C=6"):
        GATE_OPS[op](q, k, v, 4, backend="cpu")


@pytest.mark.parametrize("op", list(GATE_OPS))
def test_mismatched_shapes(op):
    q, k, v = make_qkv(2, 1, 2, 4, 3, split=False)
    with pytest.raises(ValueError, match=r"k: expected the shape of q"):
        GATE_OPS[op](q, k[:, :, :, :3], v, 2, backend="cpu")


@pytest.mark.parametrize("bad, pattern", [
    (dict(heads=None), "heads: required"), (dict(heads=0), "heads: expected a positive int"),
    (dict(heads=3, split=True), "heads: q is"), (dict(dim=3), r"q: expected \[T, B, C, N\]"),
    (dict(dtype=torch.int64), "q: expected a floating dtype"), (dict(k_dtype=torch.float64), "k: expected the dtype"),
])
def test_bad_input_is_named(bad, pattern):
    split = bad.get("split", False)
    q, k, _ = make_qkv(2, 1, 2, 4, 3, split=split)
    if "dim" in bad:
        q, k = q[0], k[0]
    if "dtype" in bad:
        q = q.to(bad["dtype"])
    if "k_dtype" in bad:
        k = k.to(bad["k_dtype"])
    with pytest.raises((ValueError, TypeError), match=pattern):
        A.qk_token_attention(q, k, bad.get("heads", 2), backend="cpu")


def test_bad_form_and_neuron_arguments():
    q, k, v = make_qkv(2, 1, 2, 4, 3, split=False)
    with pytest.raises(ValueError, match="form: expected 'code' or 'paper'"):
        A.spike_driven_attention(q, k, v, 2, form="both")
    with pytest.raises(ValueError, match="tau: must be > 1"):
        A.qk_token_attention(q, k, 2, tau=0.5)
    with pytest.raises(ValueError, match="backend: expected one of"):
        A.qk_channel_attention(q, k, 2, backend="gpu")


def test_triton_refuses_float64():
    q, k, _ = make_qkv(2, 1, 2, 4, 3, split=False, dtype=torch.float64, device=BACKEND_DEVICE["triton"])
    with pytest.raises(TypeError, match="'triton' backend supports float32"):
        A.qk_token_attention(q, k, 2, backend="triton")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("op", list(GATE_OPS))
def test_gate_ops_non_contiguous_inputs(backend, op):
    q, k, v = make_qkv(3, 2, 2, 6, 4, split=True, device=BACKEND_DEVICE[backend], high=2)
    strided = [x.transpose(0, 1).contiguous().transpose(0, 1) for x in (q, k, v)]
    assert not strided[0].is_contiguous()
    assert_matches(run(op, backend, *strided, 2), run(op, "torch", q, k, v, 2))
