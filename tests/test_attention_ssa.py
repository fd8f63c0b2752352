"""Spiking self-attention SN(Q K^T V * scale): fused backends against the reference, both orders,
both layouts, integer and real-valued operands, float64 gradients; errors."""
import pytest
import torch

from spikeops.ops import attention as A
from spikeops.ops.attention.layout import check_attention_inputs
from spikeops.ops.attention.ssa import integer_bound, pick_order

from conftest import BACKEND_DEVICE, FUSED_BACKENDS
from test_attention import make_qkv


def run(backend, q, k, v, heads, **opts):
    leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v)]
    out = A.spiking_self_attention(*leaves, heads, backend=backend, **opts)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    grads = torch.autograd.grad((out * weight).sum(), leaves)
    return [t.detach().float().cpu() for t in (out, *grads)]


def assert_matches(got, want, atol=1e-4, rtol=1e-4):
    assert torch.equal(got[0], want[0]), "spikes differ"
    for name, g, w in zip("qkv", got[1:], want[1:]):
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m: f"grad {name}: {m}")


SHAPES = [(1, 1, 1, 1, 1), (4, 2, 3, 7, 5), (2, 1, 8, 19, 3), (3, 1, 2, 40, 17), (2, 2, 1, 9, 33)]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("order", ["q_kv", "qk_v"])
@pytest.mark.parametrize("split", [False, True], ids=["TBCN", "TBhNd"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_ssa_matches_reference(backend, order, split, shape):
    q, k, v = make_qkv(*shape, split, device=BACKEND_DEVICE[backend], high=2)
    # scale so that the threshold sits inside the range of the products (the models use 0.125 at d = 64)
    scale = 1.0 / max(1, shape[4])
    want = run("torch", q, k, v, shape[2], order=order, scale=scale)
    assert_matches(run(backend, q, k, v, shape[2], order=order, scale=scale), want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("spike_operands", [None, False])
def test_ssa_real_valued_operands(backend, spike_operands):
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.rand(3, 2, 2, 11, 6, generator=g).to(BACKEND_DEVICE[backend]) for _ in range(3))
    opts = dict(scale=0.4, spike_operands=spike_operands, surrogate_function="ATan")
    want = run("torch", q, k, v, None, **opts)
    got = run(backend, q, k, v, None, **opts)
    # Real sums may round differently between BLAS and the kernels: allow a spike flip at most
    # where the reference membrane sits within rounding of the threshold (checked by the fraction).
    assert (got[0] != want[0]).float().mean() < 0.01
    assert want[0].mean() > 0.05


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ssa_half_precision(backend, dtype):
    q, k, v = make_qkv(2, 2, 2, 13, 8, split=True, dtype=dtype, device=BACKEND_DEVICE[backend])
    want = run("torch", q, k, v, 2, scale=0.25)
    assert_matches(run(backend, q, k, v, 2, scale=0.25), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_ssa_options(backend):
    q, k, v = make_qkv(4, 1, 2, 12, 6, split=False, device=BACKEND_DEVICE[backend])
    opts = dict(scale=0.3, v_reset=None, detach_reset=False, tau=3.0, surrogate_function="PiecewiseQuadratic",
                v_threshold=0.8)
    want = run("torch", q, k, v, 2, **opts)
    assert want[0].count_nonzero() > 0 and (want[0] == 0).any()
    assert_matches(run(backend, q, k, v, 2, **opts), want)


def test_ssa_float64_cpu_gradients_match_reference():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.rand(3, 1, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    opts = dict(scale=0.5, surrogate_function="ATan")
    assert_matches(run("cpu", q, k, v, None, **opts), run("torch", q, k, v, None, **opts), atol=1e-12, rtol=1e-10)


def test_orders_agree_and_auto_picks_cheaper():
    q, k, v = make_qkv(2, 1, 2, 9, 5, split=True)
    a = A.spiking_self_attention(q, k, v, order="q_kv", scale=0.25, backend="torch")
    b = A.spiking_self_attention(q, k, v, order="qk_v", scale=0.25, backend="torch")
    assert torch.equal(a, b)
    assert pick_order("auto", check_attention_inputs({"q": q}, None)) is True   # d=5 < N=9
    wide = make_qkv(1, 1, 1, 3, 8, split=True)[0]
    assert pick_order("auto", check_attention_inputs({"q": wide}, None)) is False


def test_integer_bound_detection():
    assert integer_bound(torch.tensor([0.0, 1.0]), torch.tensor([2.0])) == 2
    assert integer_bound(torch.tensor([0.5])) is None
    assert integer_bound(torch.tensor([200.0])) is None


def test_matches_spikingjelly_kernel_form():
    """SpikingJelly's SSA evaluates (V K^T) Q on [.., d, N] tensors: the transpose of Q (K^T V)."""
    q, k, v = make_qkv(2, 1, 2, 6, 4, split=False)
    qt, kt, vt = (x.reshape(2, 1, 2, 4, 6) for x in (q, k, v))
    x = ((vt @ kt.transpose(-2, -1)) @ qt) * 0.125
    from spikeops.functional import lif
    want = lif(x, v_threshold=0.5, detach_reset=True, backend="torch")[0].reshape(q.shape)
    assert torch.equal(A.spiking_self_attention(q, k, v, 2, backend="cpu"), want)


def test_ssa_errors():
    q, k, v = make_qkv(2, 1, 2, 4, 3, split=False)
    with pytest.raises(ValueError, match="order: expected one of"):
        A.spiking_self_attention(q, k, v, 2, order="kv_q")
    with pytest.raises(ValueError, match="heads: must divide"):
        A.spiking_self_attention(q, k, v, 4)
    with pytest.raises(ValueError, match="v: expected the shape of q"):
        A.spiking_self_attention(q, k, v[..., :2], 2)
    with pytest.raises(ValueError, match="scale: expected a number"):
        A.spiking_self_attention(q, k, v, 2, scale="big")
