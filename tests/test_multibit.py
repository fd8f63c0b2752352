"""IE-LIF (integer spikes) and the bipolar (ternary) neuron: every fused backend against the pure-PyTorch
reference over options, shapes and dtypes; gradcheck; compact int8 storage of the saved spikes."""
import itertools

import pytest
import torch

import spikeops
from spikeops import multibit as M
from spikeops.surrogate import SURROGATES

from conftest import BACKEND_DEVICE, FUSED_BACKENDS


def run(fn, backend, x, v0, store_v_seq=True, **opts):
    """Forward + backward of one neuron call (random weights on every output); outputs and grads as a dict."""
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    spikes, v_last, v_seq = fn(x, v0, backend=backend, store_v_seq=store_v_seq, **opts)
    g = torch.Generator().manual_seed(1)
    outs = [spikes, v_last] + ([v_seq] if store_v_seq else [])
    loss = sum((o * torch.randn(o.shape, generator=g).to(o)).sum() for o in outs)
    grad_x, grad_v0 = torch.autograd.grad(loss, [x, v0])
    out = dict(spikes=spikes, v_last=v_last, grad_x=grad_x, grad_v0=grad_v0)
    if store_v_seq:
        out["v_seq"] = v_seq
    return {k: v.detach().float().cpu() for k, v in out.items()}


def make_inputs(shape, dtype=torch.float32, device="cpu", scale=2.5, shift=0.3):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * scale + shift).to(dtype).to(device)
    v0 = (torch.rand(shape[1:], generator=g) - 0.5).to(dtype).to(device)
    return x, v0


def assert_same(got, want, atol=1e-5, rtol=1e-5):
    assert torch.equal(got["spikes"], want["spikes"]), "spikes differ"
    for key in want:
        if key != "spikes":
            torch.testing.assert_close(got[key], want[key], atol=atol, rtol=rtol, msg=lambda m: f"{key}: {m}")


INTEGER_GRID = [
    dict(D=D, tau=tau, decay_input=decay, detach_reset=detach, rounding=rounding, v_threshold=theta)
    for D, tau, decay, detach, rounding, theta in itertools.product(
        [1, 4], [3.0, None], [True, False], [False, True], ["half_up", "half_even"], [0.5, 0.7])
    if not (tau is None and not decay)
]

BIPOLAR_GRID = [
    dict(tau=tau, decay_input=decay, v_reset=v_reset, detach_reset=detach, v_threshold=theta)
    for tau, decay, v_reset, detach, theta in itertools.product(
        [3.0, None], [True, False], [None, 0.0, -0.25], [False, True], [0.6, 1.0])
    if not (tau is None and not decay)
]


def options_id(opts):
    return "-".join(f"{k}={v}" for k, v in opts.items())


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("opts", INTEGER_GRID, ids=options_id)
def test_ielif_options_match_reference(backend, opts):
    x, v0 = make_inputs((5, 3, 37), device=BACKEND_DEVICE[backend])
    want = run(M.ielif, "torch", x, v0, **opts)
    got = run(M.ielif, backend, x, v0, **opts)
    levels = set(want["spikes"].unique().tolist())
    assert levels == set(range(opts["D"] + 1)), f"test input must reach every level 0..D, got {levels}"
    assert want["grad_x"].abs().sum() > 0
    assert_same(got, want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("opts", BIPOLAR_GRID, ids=options_id)
def test_bipolar_options_match_reference(backend, opts):
    x, v0 = make_inputs((5, 3, 37), device=BACKEND_DEVICE[backend], shift=0.0)
    want = run(M.bipolar_lif, "torch", x, v0, **opts)
    got = run(M.bipolar_lif, backend, x, v0, **opts)
    assert set(want["spikes"].unique().tolist()) == {-1.0, 0.0, 1.0}, "test input must fire both signs and rest"
    assert_same(got, want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("surrogate", [k.name for k in SURROGATES])
def test_bipolar_every_surrogate_matches_reference(backend, surrogate):
    x, v0 = make_inputs((4, 2, 33), device=BACKEND_DEVICE[backend], shift=0.0)
    fn = getattr(spikeops.surrogate, surrogate)(2.5)
    for v_reset in (None, 0.0):
        want = run(M.bipolar_lif, "torch", x, v0, surrogate_function=fn, v_reset=v_reset)
        got = run(M.bipolar_lif, backend, x, v0, surrogate_function=fn, v_reset=v_reset)
        assert_same(got, want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 1), (2, 3, 5, 7), (8, 4099)])
def test_shapes_match_reference(backend, shape):
    x, v0 = make_inputs(shape, device=BACKEND_DEVICE[backend])
    assert_same(run(M.ielif, backend, x, v0, D=3), run(M.ielif, "torch", x, v0, D=3))
    assert_same(run(M.bipolar_lif, backend, x, v0), run(M.bipolar_lif, "torch", x, v0))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(backend, dtype):
    """Half inputs keep the membrane in float32 inside the kernel, as the reference does: spikes agree
    exactly and keep the input dtype; values and gradients agree to half precision."""
    x, v0 = make_inputs((6, 4, 65), dtype=dtype, device=BACKEND_DEVICE[backend])
    for fn, opts in ((M.ielif, dict(D=4, rounding="half_even")), (M.bipolar_lif, dict(v_reset=None))):
        spikes = fn(x, v0, backend=backend, **opts)[0]
        assert spikes.dtype == dtype
        got, want = run(fn, backend, x, v0, **opts), run(fn, "torch", x, v0, **opts)
        assert torch.equal(got["spikes"], want["spikes"])
        for key in ("v_last", "v_seq", "grad_x", "grad_v0"):
            torch.testing.assert_close(got[key], want[key], atol=2e-2, rtol=2e-2, msg=lambda m: f"{key}: {m}")


# Exact ties of H/θ, the float32 just below 0.5 (0.5 - 2**-25), NaN and infinities.
EDGE_VALUES = [0.5, 1.5, 2.5, 3.5, 4.5, -0.5, -1.5, 0.49999997, 1.4999999, 0.0, -0.0, 1e-30,
               float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_rounding_ties_and_non_finite(backend, rounding):
    x = torch.tensor([EDGE_VALUES], device=BACKEND_DEVICE[backend])
    got = M.multispike(x, 4, rounding=rounding, backend=backend).cpu()[0]
    want = M.multispike(x.cpu(), 4, rounding=rounding, backend="torch")[0]
    assert torch.equal(got, want)
    ties = {"half_even": [0.0, 2.0, 2.0, 4.0, 4.0, 0.0, 0.0], "half_up": [1.0, 2.0, 3.0, 4.0, 4.0, 0.0, 0.0]}
    assert got[:7].tolist() == ties[rounding]
    # floor(y + 0.5) in float32 (QSD's formula) rounds 0.5 - 2**-25 up; half-even rounds it down.
    assert got[7].item() == (1.0 if rounding == "half_up" else 0.0)
    assert got[-3:].tolist() == [0.0, 4.0, 0.0], "NaN never spikes; +inf saturates at D"


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("kind, opts", [
    ("ielif", dict(D=4, tau=3.0)), ("ielif", dict(D=2, tau=None)), ("ielif", dict(D=4, decay_input=False)),
    ("bipolar", dict(v_reset=None)), ("bipolar", dict(v_reset=0.0)), ("bipolar", dict(tau=None, v_reset=-0.25)),
])
def test_gradcheck_float64(backend, kind, opts):
    """BPTT through the membrane in float64. Spikes are piecewise constant, so the check runs on the
    membrane outputs with detach_reset=True, where the analytic gradient is exact."""
    x, v0 = make_inputs((4, 6), dtype=torch.float64)
    fn = M.ielif if kind == "ielif" else M.bipolar_lif

    def membrane(x, v0):
        _, v_last, v_seq = fn(x, v0, detach_reset=True, backend=backend, store_v_seq=True, **opts)
        return v_seq, v_last

    inputs = tuple(t.clone().requires_grad_(True) for t in (x, v0))
    assert torch.autograd.gradcheck(membrane, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["torch"] + FUSED_BACKENDS)
@pytest.mark.parametrize("theta, norm", [(1.0, None), (0.25, 4.0), (0.5, 2.0)])
def test_straight_through_window(backend, theta, norm):
    """d multispike / dx = 1/(θ·norm) on the closed window [0, D·θ] and 0 outside it."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    D = 4
    y = torch.tensor([-0.5, -1e-3, 0.0, 1e-3, 0.3, 2.0, 3.999, 4.0, 4.001, 7.0])  # in units of θ
    x = (y * theta).to(device).requires_grad_(True)
    M.multispike(x, D, v_threshold=theta, norm=norm, backend=backend).sum().backward()
    inside = ((y >= 0) & (y <= D)).float() / (theta * (norm or 1.0))
    assert torch.equal(x.grad.cpu(), inside)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_backward_keeps_only_the_input_and_v0(backend):
    """Backward recomputes H and the spikes (bipolar -1..1, integer 0..D) from x and v0: nothing else is saved."""
    device = BACKEND_DEVICE[backend]
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = (torch.randn(3, 50, device=device) * 3).requires_grad_(True)
    for fn, opts in ((M.ielif, dict(D=127, v_threshold=0.05)), (M.bipolar_lif, dict())):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spikes = fn(x, backend=backend, **opts)[0]
        assert spikes.abs().sum() > 0
        assert sorted(t.numel() for t in saved) == [1, 150]  # v0 (one shared resting value) and x
        full = [t for t in saved if t.numel() == x.numel()]
        assert torch.equal(full[0].view_as(x), x)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_modules_match_functional_and_carry_state(backend):
    x, _ = make_inputs((6, 2, 9))
    for module, fn, opts in (
        (spikeops.IELIF(D=3, tau=3.0, step_mode="m", backend=backend), M.ielif, dict(D=3, tau=3.0)),
        (spikeops.BipolarLIF(tau=3.0, v_reset=None, step_mode="m", backend=backend), M.bipolar_lif,
         dict(tau=3.0, v_reset=None)),
    ):
        first, second = module(x[:3]), module(x[3:])
        whole = fn(x, backend=backend, **opts)[0]
        assert torch.equal(torch.cat([first, second]), whole)
        module.reset()
        assert torch.equal(module(x[:3]), first)
        single = type(module)(**opts, step_mode="s", backend=backend)
        assert torch.equal(torch.stack([single(step) for step in x]), whole)


def test_ielif_norm_and_stateless():
    x, _ = make_inputs((3, 4, 5))
    stateful = spikeops.IELIF(D=4, tau=2.0, norm=4, step_mode="m", backend="torch")
    integer = M.ielif(x, D=4, tau=2.0, backend="torch")[0]
    assert torch.equal(stateful(x), integer / 4)
    stateless = spikeops.IELIF(D=4, stateless=True, step_mode="m", backend="torch")
    per_step = torch.stack([M.ielif(step[None], D=4, tau=None, backend="torch")[0][0] for step in x])
    assert torch.equal(stateless(x), per_step)
    assert stateless.v == 0.0


_PTX_DIVISIONS = r"""
import json, os, re, sys
os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.getcwd())
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spikeops.kernels import neuron
found = {}
for fire_mode in (1, 2):
    spec = neuron.aot_specs()[0]  # LIF forward, float32, charge divides by tau
    constexprs = dict(spec["constexprs"], FIRE_MODE=fire_mode, HALF_EVEN=fire_mode == 2, HARD_RESET=False)
    kernel = spec["kernel"]
    signature = dict(spec["signature"], **{name: "constexpr" for name in constexprs})
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(kernel.arg_names.index(n),): v for n, v in constexprs.items()})
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                         options=dict(num_warps=spec["num_warps"], enable_fp_fusion=False)).asm["ptx"]
    found[fire_mode] = sorted(set(re.findall(r"\bdiv\.[a-z0-9.]+", ptx)))
print(json.dumps(found))
"""


def test_triton_forward_divides_exactly_on_gpu():
    """Spikes are bit-exact across backends only if Triton's charge (/tau) and integer fire (/theta) divide
    with IEEE rounding like C++; Triton's plain '/' compiles to the approximate div.full.f32. Checked on the
    PTX, compiled ahead of time for sm_90 (no GPU needed)."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _PTX_DIVISIONS], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"Triton cannot compile PTX ahead of time here: {proc.stderr.strip().splitlines()[-1:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for fire_mode, divisions in found.items():
        assert divisions and all(d == "div.rn.f32" for d in divisions), f"fire mode {fire_mode}: {divisions}"
