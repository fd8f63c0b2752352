"""IE-LIF and the bipolar neuron against their published definitions: QSD-Transformer's Multispike and
Multispike_att and SDT-v3's MultiSpike restated literally below, and SpikingJelly 2.0's ILIFNode and
TernaryLIFNode / TernaryIFNode as second references."""
import itertools

import pytest
import torch

import spikeops

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

ALL_BACKENDS = [pytest.param("torch", id="torch")] + FUSED_BACKENDS


# ---------------------------------------------------------------- QSD-Transformer, restated literally
# bollossom/QSD-Transformer classification/models.py: forward floor(clamp(4x, 0, 4) + 0.5), backward passes
# the gradient where 0 < 4x < 4 (open interval), output / 4 (Multispike) or / 2 (Multispike_att).
class QSDMultispikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scaled, lens):
        ctx.save_for_backward(scaled)
        ctx.lens = lens
        return torch.floor(torch.clamp(scaled, 0, 4) + 0.5)

    @staticmethod
    def backward(ctx, grad_output):
        (scaled,) = ctx.saved_tensors
        return grad_output * (0 < scaled).float() * (scaled < ctx.lens).float(), None


def qsd_multispike(x):
    return QSDMultispikeFn.apply(4 * x, 4) / 4


def qsd_multispike_att(x):
    return QSDMultispikeFn.apply(4 * x, 4) / 2


# ---------------------------------------------------------------- SDT-v3, restated literally
# BICLab/Spike-Driven-Transformer-V3 Model_Base/models.py: round(clamp(x, 0, D)) / Norm, gradient passed where
# 0 <= x <= D (closed interval), divided by Norm.
class SDTv3QuantFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, D):
        ctx.save_for_backward(x)
        ctx.D = D
        return torch.round(torch.clamp(x, min=0, max=D))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad = grad_output.clone()
        grad[x < 0] = 0
        grad[x > ctx.D] = 0
        return grad, None


def sdt_v3_multispike(x, D=4, norm=4):
    return SDTv3QuantFn.apply(x, D) / norm


def qsd_inputs(device):
    """Values on every rounding tie, both clamp ends, just off them, and a random spread."""
    g = torch.Generator().manual_seed(3)
    ties = torch.arange(-2, 11) / 8.0  # x·4 = k/2: every tie of floor(. + 0.5)
    near = torch.tensor([0.0, 1.0, 1e-7, -1e-7, 1 - 1e-7, 1 + 1e-7, 0.49999997 / 4])
    return torch.cat([ties, near, torch.randn(2000, generator=g) * 0.6 + 0.4]).view(2, -1).to(device)


def boundary(x, low, high):
    return (x == low) | (x == high)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("attention", [False, True])
def test_matches_qsd_multispike_literally(backend, attention):
    device = BACKEND_DEVICE.get(backend, "cpu")
    x = qsd_inputs(device)
    ref_x, our_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    want = (qsd_multispike_att if attention else qsd_multispike)(ref_x)
    ours = spikeops.Multispike(D=4, v_threshold=0.25, norm=2 if attention else 4, backend=backend)
    got = ours(our_x)
    assert torch.equal(got, want)
    weights = torch.linspace(-1, 1, x.numel(), device=device).view_as(x)
    (want * weights).sum().backward()
    (got * weights).sum().backward()
    # QSD's window is open, ours (and SDT-v3's and SpikingJelly's) is closed: they differ only where 4x is 0 or 4.
    edge = boundary(x, 0.0, 1.0)
    assert edge.any()
    assert torch.equal(our_x.grad[~edge], ref_x.grad[~edge])
    assert torch.equal(ref_x.grad[edge], torch.zeros_like(ref_x.grad[edge]))
    assert torch.equal(our_x.grad[edge], weights[edge] * (2.0 if attention else 1.0))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("norm", [4.0, 1.0])
def test_matches_sdt_v3_multispike_literally(backend, norm):
    device = BACKEND_DEVICE.get(backend, "cpu")
    x = qsd_inputs(device) * 4
    ref_x, our_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    want = sdt_v3_multispike(ref_x, 4, norm)
    got = spikeops.multibit.multispike(our_x, 4, norm=norm, rounding="half_even", backend=backend)
    assert torch.equal(got, want)
    weights = torch.linspace(-1, 1, x.numel(), device=device).view_as(x)
    (want * weights).sum().backward()
    (got * weights).sum().backward()
    assert torch.equal(our_x.grad, ref_x.grad)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_stateless_ielif_module_is_qsd_multispike(backend):
    """IELIF(stateless=True, v_threshold=1/D, norm=D) over [T, B, C] steps equals QSD's Multispike on each step."""
    x = qsd_inputs("cpu").view(2, 5, -1)
    neuron = spikeops.IELIF(D=4, v_threshold=0.25, stateless=True, norm=4, step_mode="m", backend=backend)
    assert torch.equal(neuron(x), qsd_multispike(x))
    one_step = spikeops.IELIF(D=4, tau=2.0, decay_input=False, v_threshold=0.25, norm=4, step_mode="m",
                              backend=backend)
    assert torch.equal(one_step(x[:1]), qsd_multispike(x[:1])), "T=1 without input decay is Multispike too"


# ---------------------------------------------------------------- SpikingJelly 2.0
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")


def forward_backward(module, x, device, calls=2):
    module.to(device)
    x = x.to(device).detach().clone().requires_grad_(True)
    outs = [module(x) for _ in range(calls)]  # state carries over between calls
    loss = sum((o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum() for o in outs)
    loss.backward()
    return [o.detach().cpu() for o in outs], module.v.detach().cpu(), x.grad.detach().cpu()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("D, theta, detach_reset", list(itertools.product([4, 2], [1.0, 0.5], [False, True])))
def test_ielif_matches_spikingjelly_ilif(backend, D, theta, detach_reset):
    """SpikingJelly's ILIFNode is our IE-LIF with decay_input=False, soft reset and half-even rounding."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    x = torch.randn(5, 3, 23) * 2.0 + 0.8
    ref = sj_neuron.ILIFNode(tau=4.0 / 3.0, v_threshold=theta, detach_reset=detach_reset, step_mode="m",
                             surrogate_function=sj_surrogate.MultiLevelSpikeCount(D))
    ours = spikeops.IELIF(D=D, tau=4.0 / 3.0, decay_input=False, v_threshold=theta, rounding="half_even",
                          detach_reset=detach_reset, step_mode="m", backend=backend)
    ref_out, ref_v, ref_gx = forward_backward(ref, x, device)
    out, v, gx = forward_backward(ours, x, device)
    assert set(torch.cat(ref_out).unique().tolist()) == set(range(D + 1))
    for a, b in zip(out, ref_out):
        assert torch.equal(a, b)
    torch.testing.assert_close(v, ref_v, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-5)


# SpikingJelly's ternary neuron differentiates 1[H ≥ θ] − 1[−H ≥ θ] as sg(H − θ) + sg(−H − θ); ours uses
# sg(|H| − θ). They are equal where the surrogate's two bumps do not overlap: compact surrogates with
# support narrower than θ (PiecewiseQuadratic: |x| ≤ 1/α, Rect: |x| < 0.5/α). Forward always agrees.
DISJOINT_SURROGATES = [("PiecewiseQuadratic", 2.0), ("Rect", 1.0)]
TERNARY_OPTIONS = [
    dict(kind=kind, decay_input=decay, v_reset=v_reset, detach_reset=detach)
    for kind, decay, v_reset, detach in itertools.product(["lif", "if"], [True, False], [0.0, None, -0.25],
                                                           [False, True])
    if not (kind == "if" and not decay)
]


def ternary_pair(backend, surrogate, alpha, kind, **opts):
    sj_sg = getattr(sj_surrogate, surrogate)(alpha=alpha)
    if kind == "if":
        opts.pop("decay_input")
        ref = sj_neuron.TernaryIFNode(step_mode="m", surrogate_function=sj_sg, **opts)
        ours = spikeops.BipolarLIF(tau=None, step_mode="m", surrogate_function=sj_sg, backend=backend, **opts)
    else:
        ref = sj_neuron.TernaryLIFNode(tau=2.0, step_mode="m", surrogate_function=sj_sg, **opts)
        ours = spikeops.BipolarLIF(tau=2.0, step_mode="m", surrogate_function=sj_sg, backend=backend, **opts)
    return ref, ours


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("surrogate, alpha", DISJOINT_SURROGATES)
@pytest.mark.parametrize("opts", TERNARY_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_bipolar_matches_spikingjelly_ternary(backend, surrogate, alpha, opts):
    device = BACKEND_DEVICE.get(backend, "cpu")
    x = torch.randn(4, 3, 17) * 1.5
    ref, ours = ternary_pair(backend, surrogate, alpha, **opts)
    ref_out, ref_v, ref_gx = forward_backward(ref, x, device)
    out, v, gx = forward_backward(ours, x, device)
    assert set(torch.cat(ref_out).unique().tolist()) == {-1.0, 0.0, 1.0}
    for a, b in zip(out, ref_out):
        assert torch.equal(a, b)
    torch.testing.assert_close(v, ref_v, atol=1e-6, rtol=1e-6)
    assert ref_gx.abs().sum() > 0
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_bipolar_sigmoid_differs_from_spikingjelly_only_in_backward(backend):
    """With overlapping bumps (Sigmoid) the forward still matches SpikingJelly, the surrogate does not:
    at H = 0 theirs is 2·sg(−θ), ours sg(−θ)."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    x = torch.randn(4, 3, 17) * 1.5
    ref, ours = ternary_pair(backend, "Sigmoid", 4.0, kind="lif", decay_input=True, v_reset=None, detach_reset=True)
    ref_out, ref_v, ref_gx = forward_backward(ref, x, device)
    out, v, gx = forward_backward(ours, x, device)
    for a, b in zip(out, ref_out):
        assert torch.equal(a, b)
    torch.testing.assert_close(v, ref_v, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(gx, ref_gx, atol=1e-3)
    h = torch.zeros(1, 1, device=device, requires_grad=True)
    spikeops.multibit.bipolar_lif(h, tau=None, v_reset=None, backend=backend)[0].sum().backward()
    sg = spikeops.surrogate.Sigmoid(4.0).grad(torch.tensor([[-1.0]]))
    torch.testing.assert_close(h.grad.cpu(), sg)
