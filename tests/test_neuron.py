"""IF / LIF / PLIF: every fused backend against the pure-PyTorch reference, gradcheck, SpikingJelly parity."""
import itertools

import pytest
import torch

import spikeops
from spikeops import functional as F
from spikeops.surrogate import SURROGATES

from conftest import BACKEND_DEVICE, FUSED_BACKENDS


def run(kind, backend, x, v0, w=None, store_v_seq=True, **opts):
    """Forward + backward of one neuron call; returns outputs and input gradients as a dict."""
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    leaves = [x, v0]
    if kind == "plif":
        w = w.detach().clone().requires_grad_(True)
        leaves.append(w)
        spikes, v_last, v_seq = F.plif(x, w, v0, backend=backend, store_v_seq=store_v_seq, **opts)
    elif kind == "if":
        opts.pop("tau", None), opts.pop("decay_input", None)
        spikes, v_last, v_seq = F.if_(x, v0, backend=backend, store_v_seq=store_v_seq, **opts)
    else:
        spikes, v_last, v_seq = F.lif(x, v0, backend=backend, store_v_seq=store_v_seq, **opts)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g).to(t) for t in (spikes, v_last)]
    loss = (spikes * weights[0]).sum() + (v_last * weights[1]).sum()
    if store_v_seq:
        loss = loss + (v_seq * torch.randn(v_seq.shape, generator=g).to(v_seq)).sum()
    grads = torch.autograd.grad(loss, leaves)
    out = dict(spikes=spikes, v_last=v_last, grad_x=grads[0], grad_v0=grads[1])
    if store_v_seq:
        out["v_seq"] = v_seq
    if kind == "plif":
        out["grad_w"] = grads[2]
    return {k: v.detach().float().cpu() for k, v in out.items()}


def make_inputs(shape, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 1.5 + 0.6).to(dtype).to(device)
    v0 = (torch.rand(shape[1:], generator=g) * 0.5).to(dtype).to(device)
    w = torch.tensor(-0.3, dtype=torch.float32, device=device)
    return x, v0, w


def assert_same(got, want, atol, rtol):
    assert torch.equal(got["spikes"], want["spikes"]), "spikes differ"
    for key in want:
        if key != "spikes":
            torch.testing.assert_close(got[key], want[key], atol=atol, rtol=rtol, msg=lambda m: f"{key}: {m}")


OPTION_GRID = [
    dict(kind=kind, v_reset=v_reset, decay_input=decay, detach_reset=detach)
    for kind, v_reset, decay, detach in itertools.product(
        ["if", "lif", "plif"], [0.0, None, -0.25], [True, False], [False, True])
    if not (kind == "if" and not decay)
]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_options_match_reference(backend, opts):
    opts = dict(opts)
    kind = opts.pop("kind")
    x, v0, w = make_inputs((5, 3, 37), device=BACKEND_DEVICE[backend])
    want = run(kind, "torch", x, v0, w, tau=3.0, **opts) if kind != "plif" else run(kind, "torch", x, v0, w, **opts)
    got = run(kind, backend, x, v0, w, tau=3.0, **opts) if kind != "plif" else run(kind, backend, x, v0, w, **opts)
    assert want["spikes"].sum() > 0 and (1 - want["spikes"]).sum() > 0, "test input must both fire and not fire"
    assert_same(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("surrogate", [k.name for k in SURROGATES])
@pytest.mark.parametrize("alpha", [None, 3.0])
def test_every_surrogate_matches_reference(backend, surrogate, alpha):
    x, v0, _ = make_inputs((4, 2, 33), device=BACKEND_DEVICE[backend])
    fn = getattr(spikeops.surrogate, surrogate)(alpha)
    want = run("lif", "torch", x, v0, surrogate_function=fn)
    got = run("lif", backend, x, v0, surrogate_function=fn)
    assert want["grad_x"].abs().sum() > 0
    assert_same(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 1), (2, 3, 5, 7), (8, 4099), (16, 2, 3)])
def test_shapes_match_reference(backend, shape):
    x, v0, w = make_inputs(shape, device=BACKEND_DEVICE[backend])
    for kind in ("lif", "plif"):
        assert_same(run(kind, backend, x, v0, w), run(kind, "torch", x, v0, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_float32_state(backend, dtype):
    """Half inputs: membrane in float32 inside the kernel, same as the reference (which also runs in float32)."""
    x, v0, w = make_inputs((6, 4, 65), dtype=dtype, device=BACKEND_DEVICE[backend])
    got = run("lif", backend, x, v0, store_v_seq=True)
    want = run("lif", "torch", x, v0, store_v_seq=True)
    # Spikes can only differ where H is within half-precision rounding of the threshold, which the
    # fused backward's recomputation stores in the input dtype; forward spikes must agree exactly.
    assert torch.equal(got["spikes"], want["spikes"])
    for key in ("v_last", "v_seq", "grad_x", "grad_v0"):
        torch.testing.assert_close(got[key], want[key], atol=2e-2, rtol=2e-2, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("kind", ["if", "lif", "plif"])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_gradcheck_float64(backend, kind, v_reset):
    """BPTT through the membrane, checked numerically in float64. Spikes are piecewise constant, so the
    check runs on the membrane outputs with detach_reset=True, where the analytic gradient is exact."""
    x, v0, w = make_inputs((4, 6), dtype=torch.float64)
    w = w.double()

    def membrane(x, v0, w):
        opts = dict(v_reset=v_reset, detach_reset=True, backend=backend, store_v_seq=True)
        if kind == "plif":
            _, v_last, v_seq = F.plif(x, w, v0, **opts)
        elif kind == "if":
            _, v_last, v_seq = F.if_(x, v0, **opts)
        else:
            _, v_last, v_seq = F.lif(x, v0, tau=3.0, **opts)
        return v_seq, v_last

    inputs = tuple(t.clone().requires_grad_(True) for t in (x, v0, w))
    assert torch.autograd.gradcheck(membrane, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_equality_fires(backend):
    device = BACKEND_DEVICE[backend]
    x = torch.tensor([[1.0, 0.999999, 2.0]], device=device)
    spikes, _, _ = F.if_(x, backend=backend)
    assert spikes.tolist() == [[1.0, 0.0, 1.0]]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_non_contiguous_input(backend):
    device = BACKEND_DEVICE[backend]
    base = torch.randn(9, 6, 4, device=device) + 0.5
    x = base.transpose(1, 2)[::2]  # strided and transposed
    want = F.lif(x.contiguous(), backend="torch")
    got = F.lif(x, backend=backend)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=lambda s: f"v0{list(s)}")
def test_one_value_membrane_tensor_stays_one_value(backend, shape):
    """A one-value v0 tensor runs as a number does: broadcast by the kernels, so autograd saves one value of
    it, not a copy per neuron; outputs equal those of the same value given per neuron, and dL/dv0 is the sum
    of that per-neuron gradient, in v0's own shape."""
    device = BACKEND_DEVICE[backend]
    x, _, _ = make_inputs((3, 4, 5), device=device)
    shared = run("lif", backend, x, torch.full(shape, 0.3, device=device), tau=3.0)
    per_neuron = run("lif", backend, x, torch.full((4, 5), 0.3, device=device), tau=3.0)
    assert shared["grad_v0"].shape == shape
    torch.testing.assert_close(shared.pop("grad_v0"), per_neuron.pop("grad_v0").sum().reshape(shape))
    assert_same(shared, per_neuron, atol=1e-6, rtol=1e-6)

    saved = []
    v0 = torch.full(shape, 0.3, device=device, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        F.lif(x, v0, tau=3.0, backend=backend)
    assert saved and 4 * 5 not in saved, f"a per-neuron copy of v0 was saved: {saved}"


def test_module_to_moves_membrane_state():
    lif = spikeops.LIF(step_mode="m", backend="torch", store_v_seq=True)
    lif(torch.randn(3, 2, 4) + 1.0)
    lif.to(torch.float64)
    assert lif.v.dtype == torch.float64 and lif.v_seq.dtype == torch.float64
    lif(torch.randn(3, 2, 4, dtype=torch.float64))  # the carried state now matches the input


def _table_neuron(kind, **opts):
    """QIF / EIF have modules only: one multi-step call from the membrane v0."""
    def call(x, v0, w, backend):
        neuron = getattr(spikeops, kind)(step_mode="m", backend=backend, store_v_seq=True, **opts)
        neuron.v = v0
        spikes = neuron(x)
        return spikes, neuron.v, neuron.v_seq
    return call


# One call per charge law and fire mode, with the reset and membrane variants spread over them.
CHUNK_CASES = {
    "if-hard": lambda x, v0, w, b: F.if_(x, v0, backend=b, store_v_seq=True),
    "lif-soft-input-not-decayed": lambda x, v0, w, b: F.lif(x, v0, tau=3.0, v_reset=None, decay_input=False,
                                                            backend=b, store_v_seq=True),
    "lif-detach-reset": lambda x, v0, w, b: F.lif(x, v0, tau=3.0, detach_reset=True, backend=b, store_v_seq=True),
    "lif-shared-v0": lambda x, v0, w, b: F.lif(x, v0.mean().reshape(1, 1), tau=3.0, backend=b, store_v_seq=True),
    "plif-leak-gradient": lambda x, v0, w, b: F.plif(x, w, v0, backend=b, store_v_seq=True),
    "plif-soft": lambda x, v0, w, b: F.plif(x, w, v0, v_reset=None, backend=b, store_v_seq=True),
    "qif": _table_neuron("QIF", tau=3.0, v_c=0.6, a0=0.7, v_rest=0.05, v_reset=-0.1),
    "eif": _table_neuron("EIF", tau=3.0, delta_T=0.5, theta_rh=0.6, v_rest=0.05, v_reset=-0.1),
    "bipolar": lambda x, v0, w, b: spikeops.multibit.bipolar_lif(x, v0, tau=3.0, backend=b, store_v_seq=True),
    "ielif": lambda x, v0, w, b: spikeops.multibit.ielif(x, v0, D=3, tau=3.0, backend=b, store_v_seq=True),
}


def _chunk_steps():
    from spikeops.kernels.neuron import CHUNK
    return CHUNK


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_lengths_around_the_backward_chunk_match_reference(backend, case):
    """The Triton backward holds CHUNK steps of H in registers and rebuilds each earlier chunk's starting
    membrane from v0: T one chunk or less (1, CHUNK - 1, CHUNK), just past it, and several chunks with a
    partial last one, for every charge law and fire mode, against the pure-PyTorch reference."""
    import spikeops.multibit  # noqa: F401  (the multi-bit neurons' functional forms)

    chunk = _chunk_steps()
    x_all, v0, w = make_inputs((2 * chunk + 3, 3, 37), device=BACKEND_DEVICE[backend])
    v0 = v0 - 0.25  # below and above zero: the bipolar neuron fires both ways from its first step
    fired = set()
    for T in sorted({1, chunk - 1, chunk, chunk + 1, 2 * chunk + 3}):
        results = {}
        for b in ("torch", backend):
            x, v, leak = (t.detach().clone().requires_grad_(True) for t in (x_all[:T], v0, w))
            spikes, v_last, v_seq = CHUNK_CASES[case](x, v, leak, b)
            weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(T)).to(t)
                       for t in (spikes, v_last, v_seq)]
            loss = sum((t * u).sum() for t, u in zip((spikes, v_last, v_seq), weights))
            grads = torch.autograd.grad(loss, [x, v, leak], allow_unused=True)
            results[b] = dict(spikes=spikes, v_last=v_last, v_seq=v_seq, grad_x=grads[0], grad_v0=grads[1],
                              grad_w=grads[2])
            results[b] = {k: t.detach().float().cpu() for k, t in results[b].items() if t is not None}
        assert results["torch"].keys() == results[backend].keys()
        assert_same(results[backend], results["torch"], atol=1e-5, rtol=1e-5)
        fired |= set(results["torch"]["spikes"].unique().tolist())
    assert len(fired) > 2 if case in ("bipolar", "ielif") else fired == {0.0, 1.0}, f"inputs must fire and rest: {fired}"
