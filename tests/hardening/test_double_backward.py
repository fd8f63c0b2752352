"""Issue 18, item 1: second derivatives of the attention operators (spike gate: Q-K token / channel
attention and SDSA; SSA; bipolar / Shiftmax attention; the experts mixture) on every fused backend equal
the reference's, never a silent None or 0. The fused backward kernels are not differentiable; a backward
that autograd records differentiates the reference on the saved inputs (spikeops/ops/_autograd.py).
torch.func (grad, jacrev, vmap) on the same operators: tests/hardening/test_torch_func.py."""
import pytest
import torch

import spikeops
from spikeops.ops.attention import (qk_channel_attention, qk_token_attention, spike_driven_attention,
                                    spiking_self_attention)
from spikeops.ops.bipolar_attention.op import bipolar_attention, shiftmax_attention
from spikeops.ops.experts_mixture.op import experts_mixture

BACKENDS = [b for b in ("cpu", "triton") if b != "cpu" or spikeops.backends.extension_available()]


def _inputs(names, shape=(3, 2, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) + (0.3 if n == "q" else 0.0) for n in names]


def _ternary(shape, seed):
    return torch.randint(-1, 2, shape, generator=torch.Generator().manual_seed(seed)).double()


# name -> (call(backend) -> function of the inputs, inputs in float64)
OPS = {
    "qk_token": (lambda b: lambda q, k: qk_token_attention(q, k, 2, backend=b), _inputs("qk")),
    "qk_channel": (lambda b: lambda q, k: qk_channel_attention(q, k, 2, backend=b), _inputs("qk")),
    "sdsa_code": (lambda b: lambda q, k, v: spike_driven_attention(q, k, v, 2, backend=b), _inputs("qkv")),
    "sdsa_paper_split": (lambda b: lambda q, k, v: spike_driven_attention(q, k, v, form="paper", backend=b),
                         _inputs("qkv", (3, 2, 2, 5, 3))),
    "ssa": (lambda b: lambda q, k, v: spiking_self_attention(q, k, v, 2, scale=0.3, backend=b), _inputs("qkv")),
    "ssa_qk_v_soft": (lambda b: lambda q, k, v: spiking_self_attention(q, k, v, 2, scale=0.3, order="qk_v",
                                                                       v_reset=None, backend=b), _inputs("qkv")),
    "shiftmax_softmax": (lambda b: lambda q, k, v: shiftmax_attention(q, k, v, 0.5, "softmax", check_ternary=False,
                                                                      backend=b),
                         [_ternary((2, 5, 4), 1), _ternary((2, 5, 4), 2), _inputs("v", (2, 5, 3))[0]]),
    "bipolar_shiftmax": (lambda b: lambda q, k, v: bipolar_attention(q, k, v, 1.0, "shiftmax", v_threshold=0.2,
                                                                     check_ternary=False, backend=b),
                         [_ternary((3, 1, 5, 4), 3), _ternary((3, 1, 5, 4), 4), _inputs("v", (3, 1, 5, 3))[0]]),
    "experts_mixture": (lambda b: lambda r, a: experts_mixture(r, a, backend=b),
                        [torch.rand(3, 4, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)]),
}


def _second(fn, inputs, first, second):
    """(d L / d x_first, d (w2 . d L / d x_first) / d x_second) for L = w . fn(inputs), fixed random weights."""
    xs = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(*xs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    grad, = torch.autograd.grad((out * w).sum(), xs[first], create_graph=True)
    w2 = torch.randn(grad.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(grad.dtype)
    if not grad.requires_grad:
        return grad.detach(), torch.zeros_like(xs[second])
    hess, = torch.autograd.grad((grad * w2).sum(), xs[second], allow_unused=True)
    return grad.detach(), torch.zeros_like(xs[second]) if hess is None else hess


PAIRS = [(name, i, j) for name, (_, xs) in OPS.items() for i in range(len(xs)) for j in range(len(xs))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, first, second", PAIRS, ids=[f"{n}-d{i}d{j}" for n, i, j in PAIRS])
def test_second_derivatives_match_the_reference(name, first, second, backend):
    make, inputs = OPS[name]
    dtype = torch.float32 if backend == "triton" else torch.float64  # Triton has no float64
    want = _second(make("torch"), inputs, first, second)
    got = _second(make(backend), [x.to(dtype) for x in inputs], first, second)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_issue_reproductions(backend):
    """The issue's examples: d/da of the router gradient is all ones (not None), and qk_token_attention's
    d2/dk dq is the reference's (not 0)."""
    r = torch.rand(3, 4, requires_grad=True)
    a = torch.randn(3, 4, 5, requires_grad=True)
    gr, = torch.autograd.grad(experts_mixture(r, a, backend=backend).sum(), r, create_graph=True)
    ga, = torch.autograd.grad(gr.sum(), a, allow_unused=True)
    assert ga is not None and torch.equal(ga, torch.ones_like(a))

    def mixed(b):
        q = (torch.rand(2, 1, 4, 3, generator=torch.Generator().manual_seed(0)) * 1.2).requires_grad_(True)
        k = torch.ones(2, 1, 4, 3, requires_grad=True)
        gq, = torch.autograd.grad(qk_token_attention(q, k, 1, backend=b).sum(), q, create_graph=True)
        return torch.autograd.grad(gq.sum(), k)[0]
    want = mixed("torch")
    assert want.abs().sum() > 0
    torch.testing.assert_close(mixed(backend), want)


def test_first_order_backward_still_runs_the_fused_kernels(monkeypatch):
    """Without create_graph the reference is not used (the fused backward kernel runs)."""
    from spikeops.ops import _autograd
    calls = []
    monkeypatch.setattr(_autograd.torch.func, "vjp", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(
        AssertionError("reference used")))
    q = torch.rand(2, 1, 4, 3, requires_grad=True)
    k = torch.rand(2, 1, 4, 3, requires_grad=True)
    qk_token_attention(q, k, 2, backend="triton").sum().backward()
    assert not calls and q.grad is not None
