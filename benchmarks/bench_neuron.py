"""Multi-step neurons (LIF, IF, PLIF): spikeops backends against the code a user would otherwise run.

Peers:
- plain-loop: the per-step PyTorch loop people write by hand (sigmoid surrogate, alpha 4);
- torch.compile: that loop compiled by Inductor (compile time is outside the timed rounds);
- sj-multistep: SpikingJelly 2.0 `LIFNode(step_mode="m")`. On CPU SpikingJelly 2.0 has one path
  for it: `functional.lif_multi_step` calls the registered op `sj_lif::forward`, whose AutogradCPU
  kernel is the per-step Torch reference (`_ops/lif/reference.py`) differentiated by autograd. Its
  hand-written CPU backward (`_ops/lif/cpu.py`) is only reached from the CUDA-less trace of
  torch.compile, and `SJ_LIF_CUDA_IMPLEMENTATION` chooses among CUDA providers only
  (`_ops/selection.py`). On a GPU the automatic choice is native CUDA, then Triton, then Torch;
  sj-cuda / sj-triton / sj-torch pin each one;
- sj-singlestep: the same neuron in `step_mode="s"`, stepped by a Python loop over T.
The spikeops rows (cpu, triton, cuda) call `spikeops.functional.lif` / `if_` / `plif` with
`store_v_last=False`: like the plain loop and its compiled form they return the spikes only, so no final
membrane is written (SpikingJelly's nodes keep theirs as module state).
Every case runs forward with autograd recording ("fwd") and forward+backward ("fwd+bwd").
"""
from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import spikeops
from benchmarks.conftest import DEVICES, HAS_CUDA, SPIKEOPS_BACKENDS, require, run_case

TAU, V_THRESHOLD, V_RESET, ALPHA = 2.0, 1.0, 0.0, 4.0
HEADLINE_SHAPE = (4, 32, 256, 196)           # [T, B, C, HW]: a Spikformer stage at 14x14 tokens
SMALL_SHAPE = (4, 8, 256, 196)
SWEEP_T = (1, 2, 4, 8, 16, 32)
SWEEP_T_NEURONS = (8, 64, 196)               # 100,352 neurons
SWEEP_N_BATCH = (2, 20)                      # x 256 x 196: 1.0e5, 1.0e6 neurons
SWEEP_N_BATCH_SLOW = (200,)                  # 1.0e7 neurons
SJ_GPU_PROVIDERS = ("sj-cuda", "sj-triton", "sj-torch")

PEERS = ("plain-loop", "torch.compile", "sj-multistep", "sj-singlestep")
ALL = SPIKEOPS_BACKENDS + PEERS
SWEEP_BACKENDS = SPIKEOPS_BACKENDS + ("plain-loop", "sj-multistep")


# ---------------------------------------------------------------- the plain PyTorch peer
class _SigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        s = torch.sigmoid(ALPHA * u)
        return grad * ALPHA * s * (1 - s)


def plain_loop(x, kind: str, w=None):
    """What a user writes without a fused kernel: one time step per iteration, autograd does BPTT."""
    v = torch.zeros_like(x[0])
    spikes = []
    for x_t in x:
        if kind == "if":
            h = v + x_t
        elif kind == "lif":
            h = v + (x_t - (v - V_RESET)) / TAU
        else:
            h = v + (x_t - (v - V_RESET)) * torch.sigmoid(w)
        s = _SigmoidSpike.apply(h - V_THRESHOLD)
        v = h * (1 - s) + V_RESET * s
        spikes.append(s)
    return torch.stack(spikes)


@functools.lru_cache(maxsize=None)
def compiled_plain_loop():
    return torch.compile(plain_loop, dynamic=False)


# ---------------------------------------------------------------- SpikingJelly 2.0
def _sj_node(kind: str, step_mode: str, device: str):
    from spikingjelly.activation_based import neuron

    if kind == "lif":
        node = neuron.LIFNode(tau=TAU, v_reset=V_RESET, step_mode=step_mode)
    elif kind == "if":
        node = neuron.IFNode(v_reset=V_RESET, step_mode=step_mode)
    else:
        node = neuron.ParametricLIFNode(init_tau=TAU, v_reset=V_RESET, step_mode=step_mode)
    return node.to(device)


@contextlib.contextmanager
def _sj_cuda_provider(kind: str, provider: str):
    """Pins SpikingJelly's CUDA provider. Its choice is read from SJ_<OP>_CUDA_IMPLEMENTATION once, at
    import, so the benchmark sets the selection object's request directly and clears its cache."""
    import importlib

    try:
        selection = importlib.import_module(f"spikingjelly._ops.{'if_' if kind == 'if' else kind}")._selection
        saved = selection._requested
    except (ImportError, AttributeError) as error:
        pytest.skip(f"SpikingJelly's provider selection is not reachable here: {error}")
    selection._requested = provider
    selection._selections.clear()
    selection._compiled_selections.clear()
    try:
        yield
    finally:
        selection._requested = saved
        selection._selections.clear()
        selection._compiled_selections.clear()


def _sj_forward(node, x):
    from spikingjelly.activation_based import functional

    functional.reset_net(node)
    if node.step_mode == "m":
        return node(x)
    return torch.stack([node(x_t) for x_t in x])


# ---------------------------------------------------------------- one case
def _forward_fn(backend: str, kind: str, x, w, device: str):
    """(a callable running the neuron forward with autograd recording and returning the spikes,
    the tensors to differentiate: x and the leak parameter of PLIF)."""
    if backend in SPIKEOPS_BACKENDS:
        # Spikes only, as the plain loop returns them: the final membrane is not stored.
        options = dict(v_reset=V_RESET, backend=backend, store_v_last=False)
        if kind == "lif":
            return lambda: spikeops.functional.lif(x, tau=TAU, **options)[0], [x]
        if kind == "if":
            return lambda: spikeops.functional.if_(x, **options)[0], [x]
        return lambda: spikeops.functional.plif(x, w, **options)[0], [x, w]
    inputs = [x] if w is None else [x, w]
    if backend == "plain-loop":
        return lambda: plain_loop(x, kind, w), inputs
    if backend == "torch.compile":
        compiled = compiled_plain_loop()
        return lambda: compiled(x, kind, w), inputs
    if backend in ("sj-multistep", "sj-singlestep") + SJ_GPU_PROVIDERS:
        node = _sj_node(kind, "s" if backend == "sj-singlestep" else "m", device)
        inputs = [x] + list(node.parameters())
        if backend in SJ_GPU_PROVIDERS:
            provider = backend.removeprefix("sj-")

            def call():
                with _sj_cuda_provider(kind, provider):
                    return _sj_forward(node, x)
            return call, inputs
        return lambda: _sj_forward(node, x), inputs
    raise ValueError(f"backend: unknown benchmark backend {backend!r}")


def bench_neuron(benchmark, *, kind: str, backend: str, shape, dtype=torch.float32, device: str = "cpu",
                 backward: bool, sweep: str | None = None):
    require(backend, device)
    if backend in SJ_GPU_PROVIDERS and device != "cuda":
        pytest.skip(f"{backend} pins a SpikingJelly CUDA provider; {device} is not a CUDA device")
    if backend.startswith("sj-"):
        pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed")
    T = shape[0]
    neurons = 1
    for size in shape[1:]:
        neurons *= size
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) + 0.5).to(device=device, dtype=dtype).requires_grad_(True)
    w = torch.zeros((), device=device, requires_grad=True) if kind == "plif" else None
    grad_out = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    forward, inputs = _forward_fn(backend, kind, x, w, device)

    if backward:
        def fn():
            return torch.autograd.grad(forward(), inputs, grad_out)
    else:
        fn = forward
    pass_ = "fwd+bwd" if backward else "fwd"
    group = f"{kind} [{','.join(map(str, shape))}] {str(dtype).removeprefix('torch.')} {device} {pass_}"
    run_case(benchmark, fn, group=group, device=device, neuron_steps=T * neurons, inputs=inputs,
             op_level_memory=backend != "torch.compile", warmup=2 if backend == "torch.compile" else 1,
             op=kind, pass_=pass_, T=T, neurons=neurons, dtype=str(dtype), sweep=sweep)


# ---------------------------------------------------------------- the cases
DEVICE_PARAMS = [pytest.param(d, id=d) for d in DEVICES]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", ALL + (SJ_GPU_PROVIDERS if HAS_CUDA else ()))
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_lif_headline(benchmark, backend, backward, device):
    bench_neuron(benchmark, kind="lif", backend=backend, shape=HEADLINE_SHAPE, device=device, backward=backward)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SWEEP_BACKENDS)
@pytest.mark.parametrize("kind", ["if", "plif"])
def test_if_plif(benchmark, kind, backend, device):
    bench_neuron(benchmark, kind=kind, backend=backend, shape=SMALL_SHAPE, device=device, backward=True)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SWEEP_BACKENDS)
@pytest.mark.parametrize("T", SWEEP_T)
def test_lif_sweep_T(benchmark, T, backend, device):
    bench_neuron(benchmark, kind="lif", backend=backend, shape=(T,) + SWEEP_T_NEURONS, device=device,
                 backward=True, sweep="T")


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SWEEP_BACKENDS)
@pytest.mark.parametrize("batch", SWEEP_N_BATCH + tuple(pytest.param(b, marks=pytest.mark.slow)
                                                        for b in SWEEP_N_BATCH_SLOW))
def test_lif_sweep_neurons(benchmark, batch, backend, device):
    bench_neuron(benchmark, kind="lif", backend=backend, shape=(4, batch, 256, 196), device=device,
                 backward=True, sweep="N")


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", ALL)
def test_lif_headline_bf16(benchmark, backend, device):
    bench_neuron(benchmark, kind="lif", backend=backend, shape=HEADLINE_SHAPE, dtype=torch.bfloat16, device=device,
                 backward=True)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", ["torch.compile", "sj-singlestep"])
@pytest.mark.parametrize("T", SWEEP_T)
def test_lif_sweep_T_slow_peers(benchmark, T, backend, device):
    bench_neuron(benchmark, kind="lif", backend=backend, shape=(T,) + SWEEP_T_NEURONS, device=device,
                 backward=True, sweep="T")
