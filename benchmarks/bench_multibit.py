"""Multi-bit and signed neurons: IE-LIF (integer spikes 0..D) and the bipolar (ternary) LIF, every spikeops
backend against the pure-PyTorch reference ("torch") and SpikingJelly 2.0's equivalent neuron.

Both neurons are configured so the SpikingJelly peer computes the same numbers:
- ielif: D=4, tau=4/3, decay_input=False, half-even rounding, soft reset (SpikingJelly's ILIFNode defaults);
- bipolar_lif: tau=2, hard reset to 0, Sigmoid(4) surrogate (SpikingJelly's TernaryLIFNode; same forward).
Every case runs forward with autograd recording ("fwd") and forward+backward ("fwd+bwd"). The default run
uses the small shape; the headline shape [T=4, B=32, C=256, N=196] is marked slow on CPU.
"""
from __future__ import annotations

import math

import pytest
import torch

import spikeops
from benchmarks.conftest import DEVICES, HAS_CUDA, SPIKEOPS_BACKENDS, require, run_case

D, ILIF_TAU = 4, 4.0 / 3.0
HEADLINE_SHAPE = (4, 32, 256, 196)
SMALL_SHAPE = (4, 8, 64, 49)
PEER = "sj-multistep"
KINDS = ("ielif", "bipolar_lif")


def _forward_fn(kind: str, backend: str, x, device: str):
    """A callable running the neuron forward with autograd recording and returning its spikes."""
    if backend in SPIKEOPS_BACKENDS:
        if kind == "ielif":
            return lambda: spikeops.multibit.ielif(x, D=D, tau=ILIF_TAU, decay_input=False, rounding="half_even",
                                                   backend=backend)[0]
        return lambda: spikeops.multibit.bipolar_lif(x, tau=2.0, v_reset=0.0, backend=backend)[0]
    if backend == PEER:
        from spikingjelly.activation_based import functional, neuron, surrogate

        if kind == "ielif":
            node = neuron.ILIFNode(tau=ILIF_TAU, surrogate_function=surrogate.MultiLevelSpikeCount(D), step_mode="m")
        else:
            node = neuron.TernaryLIFNode(tau=2.0, v_reset=0.0, step_mode="m")
        node = node.to(device)

        def call():
            functional.reset_net(node)
            return node(x)
        return call
    raise ValueError(f"backend: unknown benchmark backend {backend!r}")


def bench_multibit(benchmark, *, kind: str, backend: str, shape, device: str, backward: bool):
    require(backend, device)
    if backend == PEER:
        pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed")
    T, neurons = shape[0], math.prod(shape[1:])
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2.0 + 0.5).to(device).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen).to(device)
    forward = _forward_fn(kind, backend, x, device)
    if backward:
        def fn():
            return torch.autograd.grad(forward(), [x], grad_out)
    else:
        fn = forward
    pass_ = "fwd+bwd" if backward else "fwd"
    group = f"{kind} [{','.join(map(str, shape))}] float32 {device} {pass_}"
    run_case(benchmark, fn, group=group, device=device, neuron_steps=T * neurons, inputs=[x],
             op=kind, pass_=pass_, T=T, neurons=neurons, dtype="torch.float32")


DEVICE_PARAMS = [pytest.param(d, id=d) for d in DEVICES]
BACKENDS = SPIKEOPS_BACKENDS + (PEER,)
PASSES = pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])


@PASSES
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_multibit_small(benchmark, kind, backend, device, backward):
    bench_multibit(benchmark, kind=kind, backend=backend, shape=SMALL_SHAPE, device=device, backward=backward)


@PASSES
@pytest.mark.parametrize("device", [pytest.param("cpu", id="cpu", marks=pytest.mark.slow)]
                         + ([pytest.param("cuda", id="cuda")] if HAS_CUDA else []))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_multibit_headline(benchmark, kind, backend, device, backward):
    bench_multibit(benchmark, kind=kind, backend=backend, shape=HEADLINE_SHAPE, device=device, backward=backward)
