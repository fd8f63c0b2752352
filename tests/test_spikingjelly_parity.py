"""spikeops.LIF / IF / PLIF against SpikingJelly 2.0's LIFNode / IFNode / ParametricLIFNode in
multi-step mode: same spikes, same v, gradients allclose, for every option."""
import itertools

import pytest
import torch

import spikeops

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

SURROGATE_NAMES = ["Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf", "Rect"]


def pair(kind, backend, **opts):
    surrogate = opts.pop("surrogate", "Sigmoid")
    alpha = opts.pop("alpha", None)
    sj_sg = getattr(sj_surrogate, surrogate)() if alpha is None else getattr(sj_surrogate, surrogate)(alpha=alpha)
    if kind == "lif":
        ref = sj_neuron.LIFNode(step_mode="m", surrogate_function=sj_sg, **opts)
        ours = spikeops.LIF(step_mode="m", surrogate_function=sj_sg, backend=backend, **opts)
    elif kind == "if":
        opts.pop("tau", None), opts.pop("decay_input", None)
        ref = sj_neuron.IFNode(step_mode="m", surrogate_function=sj_sg, **opts)
        ours = spikeops.IF(step_mode="m", surrogate_function=sj_sg, backend=backend, **opts)
    else:
        opts.pop("tau", None)
        ref = sj_neuron.ParametricLIFNode(init_tau=2.5, step_mode="m", surrogate_function=sj_sg, **opts)
        ours = spikeops.PLIF(init_tau=2.5, step_mode="m", surrogate_function=sj_sg, backend=backend, **opts)
    return ref, ours


def forward_backward(module, x, device):
    module.to(device)
    x = x.to(device).detach().clone().requires_grad_(True)
    outs = []
    for _ in range(2):  # two calls: state carries over between them
        outs.append(module(x))
    loss = sum((o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum() for o in outs)
    loss.backward()
    params = [p.grad.detach().cpu() for p in module.parameters()]
    return [o.detach().cpu() for o in outs], module.v.detach().cpu(), x.grad.detach().cpu(), params


OPTIONS = [
    dict(kind=k, tau=tau, decay_input=d, v_reset=r, detach_reset=dr)
    for k, tau, d, r, dr in itertools.product(["lif", "if", "plif"], [2.0], [True, False], [0.0, None],
                                              [False, True])
    if not (k == "if" and not d)
]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_matches_spikingjelly(backend, opts):
    opts = dict(opts)
    kind = opts.pop("kind")
    device = BACKEND_DEVICE[backend]
    x = torch.randn(4, 3, 17) * 1.2 + 0.7
    ref, ours = pair(kind, backend, **opts)
    ref_out, ref_v, ref_gx, ref_gp = forward_backward(ref, x, device)
    out, v, gx, gp = forward_backward(ours, x, device)
    for a, b in zip(out, ref_out):
        assert torch.equal(a, b)
    torch.testing.assert_close(v, ref_v, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-5)
    assert len(gp) == len(ref_gp)
    for a, b in zip(gp, ref_gp):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("surrogate", SURROGATE_NAMES)
def test_every_surrogate_matches_spikingjelly(backend, surrogate):
    device = BACKEND_DEVICE[backend]
    x = torch.randn(4, 2, 19) * 1.2 + 0.7
    ref, ours = pair("lif", backend, surrogate=surrogate, alpha=2.5)
    ref_out, ref_v, ref_gx, _ = forward_backward(ref, x, device)
    out, v, gx, _ = forward_backward(ours, x, device)
    assert torch.equal(out[1], ref_out[1])
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-5)


def test_single_step_mode_matches_spikingjelly():
    x = torch.randn(5, 3, 8) + 0.7
    ref = sj_neuron.LIFNode(step_mode="s", v_reset=None)
    ours = spikeops.LIF(step_mode="s", v_reset=None, backend="cpu")
    for t in range(5):
        assert torch.equal(ours(x[t]), ref(x[t]))
        torch.testing.assert_close(ours.v, ref.v)
    ours.reset(), ref.reset()
    assert ours.v == ref.v == 0.0
