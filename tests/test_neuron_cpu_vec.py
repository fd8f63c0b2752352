"""The vectorised CPU neuron kernels (csrc/neuron/neuron_cpu.cpp): the host exp of the surrogate formulas
(csrc/neuron/neuron_math.h::exp_vectorizable) against float64 exp, and the blocked, specialised forward and BPTT
against the pure-PyTorch reference at block / task boundaries and for every specialisation."""
import itertools
import math

import pytest
import torch

import spikeops
from spikeops.ops.neuron.config import FIRE_BINARY, FIRE_BIPOLAR, FIRE_INTEGER, make_config
from spikeops.ops.neuron.op import neuron_multi_step
from spikeops.surrogate import SURROGATES

pytestmark = pytest.mark.skipif(not spikeops.backends.extension_available(), reason="spikeops._C not built")

BLOCK, GRAIN = 256, 2048  # neurons per sweep and per parallel task in csrc/neuron/neuron_cpu.cpp
DENORM_MIN = torch.finfo(torch.float32).smallest_normal * 2.0 ** -23


def host_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.spikeops_host_math.exp(x)


def ulp_error(got: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|got - e^x| in float32 ulps of the correctly rounded e^x (float64 exp is exact enough here)."""
    exact = torch.exp(x.double())
    rounded = exact.float()
    spacing = (torch.nextafter(rounded.abs(), torch.tensor(math.inf)) - rounded.abs()).double()
    spacing = torch.where(rounded == 0, torch.tensor(DENORM_MIN, dtype=torch.float64), spacing)
    return (got.double() - exact).abs() / spacing


def test_host_exp_within_two_ulp_over_every_finite_input_range():
    # Every 4099th float32 bit pattern (all signs and exponents), plus a dense grid where e^x is a
    # finite non-zero float32, subnormal results included.
    patterns = torch.arange(0, 2**32, 4099, dtype=torch.int64)
    sampled = (patterns - (patterns >= 2**31).long() * 2**32).to(torch.int32).view(torch.float32)
    dense = torch.linspace(-103.0, 88.7, 2_000_001, dtype=torch.float32)
    x = torch.cat([sampled, dense])
    x = x[torch.isfinite(x)]
    got = host_exp(x)
    want = torch.exp(x.double()).float()
    overflow = torch.isinf(want)
    assert torch.equal(torch.isinf(got), overflow), "host exp overflows to inf where float32 e^x does not, or not where it does"
    err = ulp_error(got[~overflow], x[~overflow])
    assert err.max().item() <= 2.0, f"worst error {err.max().item():.3f} ulp at x = {x[~overflow][err.argmax()].item()!r}"


def test_host_exp_special_values_and_limits():
    f32 = torch.float32
    specials = torch.tensor([0.0, -0.0, math.inf, -math.inf, 1e30, -1e30, 200.0, -200.0, -104.0], dtype=f32)
    got = host_exp(specials)
    assert torch.equal(got[:2], torch.ones(2)), "e^0 must be exactly 1"
    assert got[2] == math.inf and got[4] == math.inf and got[6] == math.inf
    assert got[3] == 0.0 and got[5] == 0.0 and got[7] == 0.0 and got[8] == 0.0
    nans = host_exp(torch.tensor([math.nan, -math.nan], dtype=f32))
    assert torch.isnan(nans).all()
    # The last float32 x with a finite e^x, and the first with an infinite one.
    top = torch.tensor(88.72283172607421875, dtype=f32)
    assert torch.isfinite(torch.exp(top.double()).float()) and torch.isfinite(host_exp(top.reshape(1))).all()
    above = torch.nextafter(top, torch.tensor(math.inf))
    assert torch.isinf(torch.exp(above.double()).float()) and torch.isinf(host_exp(above.reshape(1))).all()
    # Deep in the subnormal range the result is a multiple of the smallest subnormal, never negative.
    tiny = host_exp(torch.linspace(-103.9, -95.0, 1001, dtype=f32))
    assert (tiny >= 0).all() and (tiny[1:] >= tiny[:-1]).all(), "host exp must be monotone into underflow"


def test_host_exp_rejects_other_dtypes():
    with pytest.raises(RuntimeError, match="x must be float32"):
        host_exp(torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("surrogate", [k.name for k in SURROGATES])
def test_surrogate_gradient_over_extreme_membranes(surrogate):
    """IF neuron, T = 1, v0 = 0: H = x and grad_x = dS/dH, the surrogate itself, evaluated by the
    vectorised backward over membranes where exp under- and overflows (non-finite inputs of the exp
    itself are covered above)."""
    sid = [k.name for k in SURROGATES].index(surrogate)
    alpha = 3.0
    h = torch.cat([torch.linspace(-60.0, 60.0, 4001), torch.tensor([1.0, 0.0])])
    cfg = make_config(tau=None, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=False,
                      surrogate=sid, alpha=alpha)
    x = h.reshape(1, -1).clone().requires_grad_(True)
    spikes, _, _ = neuron_multi_step(x, None, cfg=cfg, backend="cpu")
    (grad,) = torch.autograd.grad(spikes.sum(), [x])
    want = SURROGATES[sid].grad((h - 1.0).double(), alpha).float()
    # Float32 evaluation of the formulas themselves: alpha * (H - theta) is rounded before the exp
    # (about 1e-5 relative once scaled by an exp argument near 100), and Sigmoid's (1 - sg) cancels
    # (a few float32 ulps of alpha, absolute).
    torch.testing.assert_close(grad[0], want, rtol=2e-5, atol=5e-7)


FIRE_CASES = {
    "binary": dict(fire_mode=FIRE_BINARY),
    "bipolar": dict(fire_mode=FIRE_BIPOLAR),
    "integer": dict(fire_mode=FIRE_INTEGER, levels=3),
}
RESET_CASES = list(itertools.product([0.0, None], [False, True]))  # (v_reset, detach_reset): every pinned kReset


def reference_and_cpu(x, v0, cfg, leak, grads):
    """(spikes, v_last, v_seq, grad_x, grad_v0, grad_leak) from the torch reference and the cpu backend."""
    results = []
    for backend in ("torch", "cpu"):
        xs, v0s = x.clone().requires_grad_(True), v0.clone().requires_grad_(True)
        leaves = [xs, v0s]
        leak_leaf = None
        if leak is not None:
            leak_leaf = leak.clone().requires_grad_(True)
            leaves.append(leak_leaf)
        spikes, v_last, v_seq = neuron_multi_step(xs, v0s, cfg=cfg, leak=leak_leaf, backend=backend, store_v_seq=True)
        loss = (spikes * grads[0]).sum() + (v_last * grads[1]).sum() + (v_seq * grads[2]).sum()
        results.append((spikes, v_last, v_seq) + torch.autograd.grad(loss, leaves))
    return results


@pytest.mark.parametrize("fire", list(FIRE_CASES))
@pytest.mark.parametrize("v_reset,detach_reset", RESET_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("plif", [False, True], ids=["lif", "plif"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, BLOCK - 1), (4, BLOCK + 1), (2, GRAIN + BLOCK + 3), (1, 37)])
def test_blocked_kernels_match_reference(fire, v_reset, detach_reset, plif, dtype, shape):
    """Neuron counts straddle the block and task sizes, so partial blocks and several tasks run."""
    cfg = make_config(tau=None if plif else 2.5, learnable_tau=plif, decay_input=True, v_threshold=0.8,
                      v_reset=v_reset, detach_reset=detach_reset, surrogate=0, alpha=4.0, **FIRE_CASES[fire])
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.4).to(dtype)
    v0 = (torch.rand(shape[1:], generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    grads = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in (shape, shape[1:], shape)]
    leak = torch.tensor([0.35], dtype=torch.float64 if dtype == torch.float64 else torch.float32) if plif else None
    want, got = reference_and_cpu(x, v0, cfg, leak, grads)
    assert want[0].abs().sum() > 0 and (want[0] == 0).sum() > 0, "test input must both fire and not fire"
    assert torch.equal(got[0], want[0]), "spikes differ from the reference"
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    for name, g, w in zip(["v_last", "v_seq", "grad_x", "grad_v0", "grad_leak"], got[1:], want[1:]):
        if name == "grad_leak":
            # Per-neuron partials come back as float32 (the op's contract, any dtype) and are summed
            # over every neuron-step, so the rounding grows with the neuron count.
            torch.testing.assert_close(g, w, atol=1e-6 * shape[0] * shape[1], rtol=1e-6, msg="grad_leak")
        else:
            torch.testing.assert_close(g, w, **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("tau", [2.0, 4.0, 2.0**20, 2.0**126, 2.0**127, 3.0], ids=lambda t: f"tau={t:g}")
@pytest.mark.parametrize("decay_input", [True, False], ids=["decay_input", "no_decay_input"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_of_two_tau_matches_the_dividing_reference_bit_for_bit(tau, decay_input, dtype):
    """A fixed tau that is a power of two runs as a multiply by 1/tau (neuron_cpu.cpp::kernel_params); the
    reference divides. Both round the same real number, so the membrane is the same bit for bit, subnormal
    steps included; 2^127 (1/tau subnormal in float32) and 3 keep the divide."""
    cfg = make_config(tau=tau, decay_input=decay_input, v_threshold=1.0, v_reset=0.0, detach_reset=False,
                      surrogate=0, alpha=4.0)
    gen = torch.Generator().manual_seed(5)
    # Inputs of the order of tau with decay_input (x / tau is what fires), of 1 without; at most 2^120 so that
    # float32 holds them.
    scale = min(tau, 2.0**120) if decay_input else 1.0
    x = (torch.randn(4, 3 * BLOCK + 5, generator=gen, dtype=torch.float64) * 1.5 + 0.5) * scale
    x[:, :BLOCK] = torch.randn(4, BLOCK, generator=gen, dtype=torch.float64) * 1e-37  # subnormal steps in float32
    x = x.to(dtype)
    v0 = (torch.rand(x.shape[1:], generator=gen, dtype=torch.float64) * 0.9).to(dtype)
    want = neuron_multi_step(x, v0, cfg=cfg, backend="torch", store_v_seq=True)
    got = neuron_multi_step(x, v0, cfg=cfg, backend="cpu", store_v_seq=True)
    if scale == tau:
        assert want[0].sum() > 0 and (want[0] == 0).sum() > 0, "test input must both fire and not fire"
    for name, g, w in zip(["spikes", "v_last", "v_seq"], got, want):
        assert torch.equal(g, w), f"{name} differs from the reference"


ROW_SWEEP_STEPS, ROW_SWEEP = 8, 65536  # neuron_cpu.cpp: from this T on, forward runs step by step over spans


@pytest.mark.parametrize("fire", list(FIRE_CASES))
@pytest.mark.parametrize("shared_v0", [False, True], ids=["v0-per-neuron", "v0-shared"])
@pytest.mark.parametrize("shape", [(ROW_SWEEP_STEPS, ROW_SWEEP + 37), (13, 2 * ROW_SWEEP + GRAIN + 5), (9, 37)])
def test_row_sweep_forward_equals_chained_blocks(fire, shared_v0, shape):
    """From ROW_SWEEP_STEPS steps on, the CPU forward runs one step at a time over spans of neurons (several spans
    and a partial one here) instead of all steps of a block. The same steps cut into calls of at most 4 (blocks,
    each starting from the membrane the previous call left) give the same spikes and membranes bit for bit, and
    the reference agrees."""
    cfg = make_config(tau=2.5, decay_input=True, v_threshold=0.8, v_reset=0.0, detach_reset=False, surrogate=0,
                      alpha=4.0, **FIRE_CASES[fire])
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=gen) * 1.5 + 0.4
    v0 = torch.tensor(0.2) if shared_v0 else torch.rand(shape[1:], generator=gen) * 0.5
    swept = neuron_multi_step(x, v0, cfg=cfg, backend="cpu", store_v_seq=True)
    spikes, v_seq, v_last = [], [], v0
    for part in x.split(4):
        s, v_last, vs = neuron_multi_step(part, v_last, cfg=cfg, backend="cpu", store_v_seq=True)
        spikes.append(s), v_seq.append(vs)
    chained = (torch.cat(spikes), v_last, torch.cat(v_seq))
    for name, got, want in zip(["spikes", "v_last", "v_seq"], swept, chained):
        assert torch.equal(got, want), f"{name}: row sweep differs from chained blocks"
    reference = neuron_multi_step(x, v0, cfg=cfg, backend="torch", store_v_seq=True)
    assert reference[0].sum() > 0 and (reference[0] == 0).sum() > 0, "test input must both fire and not fire"
    assert torch.equal(swept[0], reference[0])
    torch.testing.assert_close(swept[2], reference[2], atol=1e-5, rtol=1e-5)
