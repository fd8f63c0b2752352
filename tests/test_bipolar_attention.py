"""Bipolar self-attention with Shiftmax: every fused backend against the reference, gradcheck of
the smooth variant, Shiftmax's properties, softmax mode against torch.softmax, the module, bad input."""
import math

import pytest
import torch

from spikeops.attention_bipolar import BipolarSelfAttention
from spikeops.ops.bipolar_attention import naive
from spikeops.ops.bipolar_attention.op import bipolar_attention, shiftmax_attention

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

NORM_VARIANTS = [("shiftmax", True), ("shiftmax", False), ("softmax", True), ("none", True)]


def ternary(shape, g, density=0.6):
    signs = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return (signs * (torch.rand(shape, generator=g) < density)).float()


def make_qkv(shape=(2, 3, 37, 8), dv=12, seed=0):
    """Ternary q, k [..., N, d] and binary v [..., N, dv]."""
    g = torch.Generator().manual_seed(seed)
    q, k = ternary(shape, g), ternary(shape, g)
    v = (torch.rand(*shape[:-1], dv, generator=g) < 0.5).float()
    return q, k, v


def run(fn, q, k, v, **kwargs):
    """Forward + backward with a fixed random upstream gradient; returns output and (dq, dk, dv)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    y = fn(*leaves, **kwargs)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y)
    grads = torch.autograd.grad((y * upstream).sum(), leaves)
    return y.detach().float().cpu(), [g_.float().cpu() for g_ in grads]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("norm,pow2", NORM_VARIANTS)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_attention_matches_reference(backend, norm, pow2, scale):
    device = BACKEND_DEVICE[backend]
    q, k, v = make_qkv()
    want_y, want_grads = run(naive.attention, q, k, v, scale=scale, norm=norm, pow2_denominator=pow2)
    got_y, got_grads = run(shiftmax_attention, *(t.to(device) for t in (q, k, v)), scale=scale, norm=norm,
                           pow2_denominator=pow2, backend=backend)
    torch.testing.assert_close(got_y, want_y, atol=1e-5, rtol=1e-5)
    for name, got, want in zip("qkv", got_grads, want_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_integer_shiftmax_is_exact(backend):
    """d = 8 and N < 64 keep every power-of-two sum exact in float32: all backends agree bit for bit."""
    q, k, v = make_qkv((2, 2, 50, 8), dv=16)
    want = naive.attention(q, k, v, 1.0)
    got = shiftmax_attention(*(t.to(BACKEND_DEVICE[backend]) for t in (q, k, v)), 1.0, backend=backend)
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("norm", ["shiftmax", "softmax"])
def test_bipolar_attention_spikes_match_reference(backend, norm):
    q, k, v = make_qkv((4, 2, 2, 30, 8), dv=8)
    cfg = naive_lif_config()
    want = naive.bipolar_attention(q, k, v, 1.0, norm, True, cfg)
    device = BACKEND_DEVICE[backend]
    got = bipolar_attention(*(t.to(device) for t in (q, k, v)), 1.0, norm, backend=backend)
    assert set(got.unique().tolist()) <= {0.0, 1.0}
    if norm == "shiftmax":
        assert torch.equal(got.cpu(), want)
    else:  # exp rounding may differ in the last bit; a spike flips only at an exact threshold tie
        assert (got.cpu() != want).float().mean() < 0.01


def naive_lif_config():
    from spikeops.ops.neuron.config import make_config
    from spikeops.surrogate import resolve_surrogate
    s = resolve_surrogate(None)
    return make_config(tau=2.0, decay_input=True, v_threshold=0.5, v_reset=0.0, detach_reset=True,
                       surrogate=s.id, alpha=s.alpha)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bfloat16_close_to_reference(backend):
    q, k, v = make_qkv((2, 2, 40, 16), dv=16)
    want_y, want_grads = run(naive.attention, q, k, v, scale=0.25, norm="softmax")
    device = BACKEND_DEVICE[backend]
    got_y, got_grads = run(shiftmax_attention, *(t.to(device, torch.bfloat16) for t in (q, k, v)), scale=0.25,
                           norm="softmax", backend=backend)
    torch.testing.assert_close(got_y, want_y, atol=2e-2, rtol=2e-2)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("norm,pow2", [("shiftmax", False), ("softmax", True), ("none", True)])
def test_gradcheck_smooth_variants(backend, norm, pow2):
    """Shiftmax without the power-of-two denominator is a base-2 softmax: its backward is exact.
    Gradients flow to q and k through real-valued perturbations only in the reference, so the
    fused kernels (which read q, k as ternary) are checked through v and against the reference."""
    q, k, v = (t.double() for t in make_qkv((1, 2, 9, 4), dv=3))
    if backend == "torch":
        fn = lambda q_, k_, v_: naive.attention(q_, k_, v_, 0.75, norm, pow2)  # noqa: E731
        assert torch.autograd.gradcheck(fn, [t.requires_grad_() for t in (q, k, v)])
    else:
        fn = lambda v_: shiftmax_attention(q, k, v_, 0.75, norm, pow2_denominator=pow2, backend="cpu")  # noqa: E731
        assert torch.autograd.gradcheck(fn, [v.requires_grad_()])
        want = run(naive.attention, q, k, v, scale=0.75, norm=norm, pow2_denominator=pow2)[1]
        got = run(shiftmax_attention, q, k, v, scale=0.75, norm=norm, pow2_denominator=pow2, backend="cpu")[1]
        for g_got, g_want in zip(got, want):
            torch.testing.assert_close(g_got, g_want, atol=1e-10, rtol=1e-10)


def test_shiftmax_gradient_is_shift_consistent():
    """Adding a constant to a row leaves Shiftmax unchanged, so the straight-through gradient sums to
    zero over each row; for the smooth variant it is the exact softmax2 gradient."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(-6, 7, (5, 11), generator=g).double().requires_grad_()
    probs = naive.shiftmax(scores)
    upstream = torch.randn(probs.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((probs * upstream).sum(), scores)
    torch.testing.assert_close(grad.sum(-1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    shifted = naive.shiftmax(scores.detach() + 3.0)
    assert torch.equal(shifted, probs.detach())
    r = probs.detach().sum(-1, keepdim=True)
    want = math.log(2) * probs.detach() * (upstream - (probs.detach() * upstream).sum(-1, keepdim=True) / r)
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("backend", ["torch"] + FUSED_BACKENDS)
def test_shiftmax_rows_sum_between_half_and_one(backend):
    """With V = 1 the output is each row's sum of P."""
    q, k, _ = make_qkv((3, 4, 45, 8))
    ones = torch.ones(3, 4, 45, 1)
    device = BACKEND_DEVICE.get(backend, "cpu")
    sums = shiftmax_attention(q.to(device), k.to(device), ones.to(device), 1.0, backend=backend).squeeze(-1).cpu()
    assert bool((sums > 0.5).all()) and bool((sums <= 1.0).all())
    assert bool((sums < 1.0).any()), "every row was exactly stochastic: the test inputs exercise nothing"
    torch.testing.assert_close(sums.double(), naive.row_sums(q, k, 1.0))
    smooth = shiftmax_attention(q.to(device), k.to(device), ones.to(device), 1.0, pow2_denominator=False,
                                backend=backend).cpu()
    torch.testing.assert_close(smooth, torch.ones_like(smooth))


@pytest.mark.parametrize("backend", ["torch"] + FUSED_BACKENDS)
def test_shiftmax_probabilities_are_powers_of_two(backend):
    """With V = I the output is P itself: integer scores give 2^(A - max) / 2^k, exact powers of two."""
    q, k, _ = make_qkv((2, 20, 8))
    eye = torch.eye(20).expand(2, 20, 20).contiguous()
    device = BACKEND_DEVICE.get(backend, "cpu")
    probs = shiftmax_attention(q.to(device), k.to(device), eye.to(device), 1.0, backend=backend).cpu()
    mantissa, _ = torch.frexp(probs)
    assert bool((mantissa == 0.5).all())
    assert probs.unique().numel() > 3, "all probabilities equal: the test inputs exercise nothing"


@pytest.mark.parametrize("backend", ["torch"] + FUSED_BACKENDS)
def test_softmax_mode_equals_torch_softmax_attention(backend):
    q, k, v = make_qkv((2, 3, 33, 16), dv=16)
    v = v + 0.25 * torch.randn(v.shape, generator=torch.Generator().manual_seed(5))  # any real V
    scale = 16 ** -0.5
    want = torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1) @ v
    device = BACKEND_DEVICE.get(backend, "cpu")
    got = shiftmax_attention(q.to(device), k.to(device), v.to(device), scale, "softmax", backend=backend).cpu()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_module_matches_reference_backend(backend):
    device = BACKEND_DEVICE[backend]
    x = torch.randn(3, 2, 16, 3, 3, generator=torch.Generator().manual_seed(2)) * 3
    outputs = {}
    for be in ("torch", backend):
        torch.manual_seed(4)
        block = BipolarSelfAttention(16, num_heads=2, qk_threshold=0.5, attention_threshold=0.25,
                                     backend=be).to(device)
        xin = x.to(device).requires_grad_()
        y = block(xin)
        y.sum().backward()
        outputs[be] = (y.detach().cpu(), xin.grad.cpu(), block.q_conv.weight.grad.cpu())
    (y_ref, gx_ref, gw_ref), (y, gx, gw) = outputs["torch"], outputs[backend]
    assert y_ref.sum() > 0, "no output spikes: the test exercises nothing"
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(gx, gx_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gw, gw_ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- bad input
def test_rejects_non_ternary_q():
    q, k, v = make_qkv()
    with pytest.raises(ValueError, match=r"q: expected ternary spikes .* such as -?0\.5"):
        shiftmax_attention(q * 0.5, k, v, 1.0, backend="torch")
    shiftmax_attention(q * 0.5, k, v, 1.0, check_ternary=False, backend="torch")  # the check can be skipped


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(norm="sparsemax"), ValueError, r"norm: expected one of .*'sparsemax'"),
    (dict(scale=float("nan")), ValueError, r"scale: expected a finite number, got nan"),
    (dict(scale=True), ValueError, r"scale: expected a finite number"),
    (dict(backend="gpu"), ValueError, r"backend: expected one of"),
])
def test_rejects_bad_arguments(kwargs, error, pattern):
    q, k, v = make_qkv()
    args = dict(scale=1.0, norm="shiftmax")
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        shiftmax_attention(q, k, v, args.pop("scale"), args.pop("norm"), **args)


def test_rejects_bad_tensors():
    q, k, v = make_qkv()
    with pytest.raises(ValueError, match=r"k: expected q's shape"):
        shiftmax_attention(q, k[..., :4], v, 1.0)
    with pytest.raises(ValueError, match=r"v: expected shape \(2, 3, 37\) \+ \(dv,\)"):
        shiftmax_attention(q, k, v[:, :, :5], 1.0)
    with pytest.raises(ValueError, match=r"v: expected q's dtype torch.float32"):
        shiftmax_attention(q, k, v.double(), 1.0)
    with pytest.raises(TypeError, match=r"q: expected a floating dtype"):
        shiftmax_attention(q.long(), k, v, 1.0)
    with pytest.raises(TypeError, match=r"k: expected a torch.Tensor"):
        shiftmax_attention(q, k.tolist(), v, 1.0)
    with pytest.raises(ValueError, match=r"q: expected at least 3 dimensions"):
        bipolar_attention(q[0, 0], k[0, 0], v[0, 0], 1.0)
    wide = torch.zeros(1, 4, 300)
    with pytest.raises(ValueError, match=r"q: head dimension must be <= 256, got 300"):
        shiftmax_attention(wide, wide, wide[..., :8], 1.0)


def test_triton_rejects_float64():
    q, k, v = (t.double().to(BACKEND_DEVICE["triton"]) for t in make_qkv())
    with pytest.raises(TypeError, match=r"q: the 'triton' backend supports float32"):
        shiftmax_attention(q, k, v, 1.0, backend="triton")


def test_module_rejects_bad_configuration():
    with pytest.raises(ValueError, match=r"num_heads: must divide dim=10"):
        BipolarSelfAttention(10, num_heads=4)
    with pytest.raises(ValueError, match=r"norm: expected one of"):
        BipolarSelfAttention(8, num_heads=2, norm="relu")
    with pytest.raises(ValueError, match=r"x: expected a \[T, B, C=8, H, W\] tensor, got \(2, 8, 4\)"):
        BipolarSelfAttention(8, num_heads=2)(torch.zeros(2, 8, 4))


def test_aot_specs_name_every_kernel_argument():
    from spikeops.kernels import bipolar_attention as kernels
    specs = kernels.aot_specs()
    assert {s["kernel"] for s in specs} == {kernels.bipolar_attention_forward_kernel,
                                            kernels.bipolar_attention_backward_query_kernel,
                                            kernels.bipolar_attention_backward_key_kernel}
    for spec in specs:
        assert set(spec["signature"]) | set(spec["constexprs"]) == set(spec["kernel"].arg_names), spec["name"]
        assert {"fp32", "bf16"} & set(spec["name"].split("_"))
