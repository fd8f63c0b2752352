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


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("order", ["q_kv", "qk_v"])
def test_ssa_all_zero_tiles(backend, order):
    """All-zero query tiles, key tiles and whole steps: the kernels skip their products."""
    q, k, v = make_qkv(4, 1, 2, 150, 32, split=True, device=BACKEND_DEVICE[backend])
    q[1] = 0                  # a whole step without queries: y = 0, the membrane only decays
    q[2, :, :, 64:128] = 0    # a query tile of step 2
    k[0, :, :, :48] = 0       # the first key tiles of step 0
    v[3, :, :, 16:80] = 0     # value tiles in the middle of step 3
    want = run("torch", q, k, v, None, order=order, scale=1 / 64)
    assert want[0].count_nonzero() > 0 and (want[0] == 0).any()
    assert_matches(run(backend, q, k, v, None, order=order, scale=1 / 64), want)


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


# ---------------------------------------------------------------- the fused CUDA kernel (csrc/ssa/ssa_cuda.cu)
from spikeops.ops.attention import naive  # noqa: E402
from spikeops.ops.attention.ssa import fused_cuda_order  # noqa: E402


def shape_of(T, B, h, N, d, split=True):
    return check_attention_inputs({"q": torch.empty((T, B, h, N, d) if split else (T, B, h * d, N))},
                                  None if split else h)


@pytest.mark.parametrize("order_q_kv", [True, False])
def test_fused_cuda_order_takes_integer_operands_that_fit(order_q_kv):
    s = shape_of(4, 8, 6, 196, 64)
    assert fused_cuda_order(s, torch.float32, 1, order_q_kv) is order_q_kv
    assert fused_cuda_order(s, torch.bfloat16, 0, order_q_kv) is order_q_kv  # all-zero operands
    assert fused_cuda_order(shape_of(1, 1, 1, 3, 5, split=False), torch.float16, 1, order_q_kv) is order_q_kv


def test_fused_cuda_order_falls_back_to_aten_when_the_integers_do_not_fit():
    s = shape_of(2, 1, 2, 50, 64)
    assert fused_cuda_order(s, torch.float32, None, True) is None        # real-valued operands
    assert fused_cuda_order(s, torch.float64, 1, True) is None           # float64 stays on ATen
    assert fused_cuda_order(shape_of(2, 1, 2, 50, 65), torch.float32, 1, True) is None  # d > 64
    assert fused_cuda_order(s, torch.float32, 128, True) is None         # beyond int8
    # d * N * bound^3 >= 2**31 could overflow the int32 accumulators
    assert fused_cuda_order(shape_of(1, 1, 1, 2 ** 31 // (64 * 127 ** 3) + 1, 64), torch.float32, 127, True) is None
    assert fused_cuda_order(shape_of(1, 1, 1, 2 ** 31 // (64 * 127 ** 3) - 1, 64), torch.float32, 127, True) is True


def test_fused_cuda_order_switches_to_q_kv_when_scores_exceed_int8():
    assert fused_cuda_order(shape_of(1, 1, 1, 9, 16), torch.float32, 2, False) is False  # 16 * 4 = 64 <= 127
    assert fused_cuda_order(shape_of(1, 1, 1, 9, 16), torch.float32, 3, False) is True   # 16 * 9 = 144
    assert fused_cuda_order(shape_of(1, 1, 1, 9, 64), torch.float32, 2, False) is True


def kernel_vs_reference(q, k, v, s, order_q_kv, bound, scale=None, **neuron):
    """Spikes of csrc/ssa/ssa_cuda.cu called directly and of the reference; scale defaults to one that puts the
    threshold inside the range of the products."""
    cfg = A.attention_config(**neuron)
    if scale is None:
        qh, kh, vh = (x.double() if s.heads_split else x.double().reshape(s.T, s.B, s.heads, s.d, s.N).transpose(-1, -2)
                      for x in (q, k, v))
        scale = 1.0 / max(1.0, float((qh @ (kh.transpose(-1, -2) @ vh)).mean()))
    order = "q_kv" if order_q_kv else "qk_v"
    want = naive.spiking_self_attention(q, k, v, s, cfg, scale, order)
    out, spikes = torch.ops.spikeops.ssa_forward(q, k, v, list(s[:5]) + [int(s.heads_split)], cfg.as_list(),
                                                 scale, order_q_kv, bound)
    return out, spikes, want


CUDA_SHAPES = [(1, 1, 1, 1, 16), (3, 2, 8, 197, 16), (2, 1, 6, 197, 64), (8, 1, 3, 33, 32), (4, 2, 5, 19, 17),
               (1, 3, 1, 70, 64), (5, 1, 2, 130, 3), (2, 2, 4, 65, 33)]


@pytest.mark.cuda
@pytest.mark.parametrize("order_q_kv", [True, False], ids=["q_kv", "qk_v"])
@pytest.mark.parametrize("split", [False, True], ids=["TBCN", "TBhNd"])
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_fused_kernel_matches_reference(shape, split, order_q_kv):
    q, k, v = make_qkv(*shape, split, device="cuda")
    s = check_attention_inputs({"q": q}, None if split else shape[2])
    out, spikes, want = kernel_vs_reference(q, k, v, s, order_q_kv, 1)
    assert torch.equal(out, want)
    assert torch.equal(spikes, want.to(torch.int8))
    if q.numel() > 64:
        assert want.count_nonzero() > 0 and (want == 0).any()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order_q_kv", [True, False], ids=["q_kv", "qk_v"])
def test_cuda_fused_kernel_spike_counts_and_dtypes(dtype, order_q_kv):
    high = 3 if order_q_kv else 2  # qk_v: d * bound^2 = 16 * 4 fits int8 scores
    d = 64 if order_q_kv else 16
    q, k, v = make_qkv(3, 2, 2, 75, d, split=False, dtype=dtype, device="cuda", high=high)
    s = check_attention_inputs({"q": q}, 2)
    bound = int(max(x.abs().max() for x in (q, k, v)))
    out, spikes, want = kernel_vs_reference(q, k, v, s, order_q_kv, bound, tau=3.0, v_reset=None)
    assert out.dtype == dtype and torch.equal(out, want)
    assert torch.equal(spikes, want.to(torch.int8))


@pytest.mark.cuda
@pytest.mark.parametrize("order_q_kv", [True, False], ids=["q_kv", "qk_v"])
def test_cuda_fused_kernel_skips_zero_tiles_without_changing_results(order_q_kv):
    """All-zero query tiles, key tiles and whole steps exercise every skip branch of the kernel."""
    q, k, v = make_qkv(4, 1, 2, 150, 32, split=True, device="cuda")
    q[1] = 0                  # a whole step without queries: y = 0, the membrane only decays
    q[2, :, :, 64:128] = 0    # the second query tile of step 2
    k[0, :, :, :48] = 0       # the first key tiles of step 0
    v[3, :, :, 16:80] = 0     # value tiles in the middle of step 3
    s = check_attention_inputs({"q": q}, None)
    out, _, want = kernel_vs_reference(q, k, v, s, order_q_kv, 1)
    assert torch.equal(out, want)


@pytest.mark.cuda
@pytest.mark.parametrize("order", ["q_kv", "qk_v"])
def test_cuda_backend_runs_the_fused_kernel_and_keeps_gradients(order):
    q, k, v = make_qkv(2, 1, 2, 40, 16, split=True, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = run("cuda", q, k, v, None, order=order, scale=0.0625)
    assert "spikeops::ssa_forward" in {event.name for event in prof.events()}
    assert_matches(got, run("torch", q, k, v, None, order=order, scale=0.0625))


@pytest.mark.cuda
def test_cuda_fused_kernel_rejects_what_it_cannot_hold():
    q, k, v = make_qkv(1, 1, 1, 9, 16, split=True, device="cuda")
    cfg = A.attention_config().as_list()
    with pytest.raises(RuntimeError, match="scores d \\* integer_bound\\^2 <= 127"):
        torch.ops.spikeops.ssa_forward(q, k, v, [1, 1, 1, 9, 16, 1], cfg, 0.125, False, 3)
    wide = make_qkv(1, 1, 1, 9, 65, split=True, device="cuda")
    with pytest.raises(RuntimeError, match="head dim d must be <= 64"):
        torch.ops.spikeops.ssa_forward(*wide, [1, 1, 1, 9, 65, 1], cfg, 0.125, True, 1)
    with pytest.raises(RuntimeError, match="v must be contiguous and match q"):
        torch.ops.spikeops.ssa_forward(q, k, v[..., :8], [1, 1, 1, 9, 16, 1], cfg, 0.125, True, 1)
