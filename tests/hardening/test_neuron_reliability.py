"""Regressions of the neuron operator found by adversarial testing (reliability round 2): second
derivatives, torch.func, a membrane left by inference mode, thread-count-independent and full-precision
leak gradients, bounded backward scratch, and the Triton operators' own argument checks."""
import subprocess
import sys

import pytest
import torch

import spikeops
from spikeops import functional as F
from spikeops.ops.neuron.config import make_config

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

ALL_BACKENDS = [pytest.param("torch", id="torch"), *FUSED_BACKENDS]


def _device(backend):
    return BACKEND_DEVICE.get(backend, "cpu")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kind", ["lif", "plif", "qif"])
def test_double_backward_matches_the_reference(backend, kind):
    """d/dx of (d loss / d x) . u: the fused backends differentiate the reference on the saved inputs."""
    device = _device(backend)
    dtype = torch.float64 if backend in ("torch", "cpu") else torch.float32
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randn(5, 7, generator=g, dtype=dtype) + 0.6).to(device)
    u = torch.randn(5, 7, generator=g, dtype=dtype).to(device)

    def second(b):
        x = x0.clone().requires_grad_(True)
        if kind == "plif":
            w = torch.tensor(0.3, dtype=dtype, device=device, requires_grad=True)
            _, v_last, v_seq = F.plif(x, w, backend=b, store_v_seq=True, surrogate_function="ATan")
        elif kind == "qif":
            neuron = spikeops.QIF(step_mode="m", backend=b, store_v_seq=True, surrogate_function="ATan")
            neuron(x)
            v_seq = neuron.v_seq
        else:
            _, v_last, v_seq = F.lif(x, backend=b, store_v_seq=True, surrogate_function="ATan")
        (gx,) = torch.autograd.grad((v_seq * v_seq).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad((gx * u).sum(), x)
        return gx.detach(), ggx

    gx, ggx = second(backend)
    ref_gx, ref_ggx = second("torch")
    assert ggx.abs().sum() > 0
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ggx, ref_ggx, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_torch_func_grad_vmap_and_jacrev(backend):
    device = _device(backend)
    x = (torch.randn(4, 3, 6) + 0.6).to(device)

    def membrane_sum(x):
        _, v_last, _ = F.lif(x, backend=backend, v_reset=None)
        return v_last.sum()

    def membrane_sum_ref(x):
        _, v_last, _ = F.lif(x, backend="torch", v_reset=None)
        return v_last.sum()

    torch.testing.assert_close(torch.func.grad(membrane_sum)(x), torch.func.grad(membrane_sum_ref)(x))
    # vmap over a batch dimension that is not the time axis: one launch with B times the neurons.
    per_sample = torch.func.vmap(lambda xs: F.lif(xs, backend=backend)[0], in_dims=1)(x)
    assert torch.equal(per_sample, torch.stack([F.lif(x[:, i], backend="torch")[0] for i in range(3)]))
    jac = torch.func.jacrev(lambda xs: F.lif(xs, backend=backend, v_reset=None)[1])(x[:, 0, :2].contiguous())
    ref = torch.func.jacrev(lambda xs: F.lif(xs, backend="torch", v_reset=None)[1])(x[:, 0, :2].contiguous())
    torch.testing.assert_close(jac, ref)


def test_vmap_with_a_batched_plif_leak_loops_per_sample():
    x = torch.randn(4, 3, 5) + 0.6
    w = torch.tensor([0.1, -0.2, 0.4])
    out = torch.func.vmap(lambda xs, ws: F.plif(xs, ws, backend="cpu")[1], in_dims=(1, 0))(x, w)
    ref = torch.stack([F.plif(x[:, i], w[i], backend="torch")[1] for i in range(3)])
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_membrane_left_by_inference_mode_trains(backend):
    neuron = spikeops.LIF(step_mode="m", backend=backend)
    with torch.inference_mode():
        neuron(torch.randn(2, 4) + 1.0)
    assert neuron.v.is_inference()
    x = (torch.randn(2, 4) + 1.0).requires_grad_(True)
    neuron(x).sum().backward()
    assert x.grad is not None


def _plif_w_grad(threads: int, dtype) -> str:
    code = (
        "import torch, spikeops.functional as F\n"
        f"torch.set_num_threads({threads})\n"
        "torch.manual_seed(0)\n"
        f"x = torch.randn(4, 200000, dtype={dtype})\n"
        f"w = torch.tensor(0.2, dtype={dtype}, requires_grad=True)\n"
        "F.plif(x, w, backend='cpu')[0].sum().backward()\n"
        "print(repr(w.grad.item()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_plif_leak_gradient_does_not_depend_on_the_thread_count():
    assert _plif_w_grad(1, "torch.float32") == _plif_w_grad(2, "torch.float32")


def test_plif_leak_gradient_in_float64_is_accumulated_in_float64():
    torch.manual_seed(1)
    x = torch.randn(4, 5000, dtype=torch.float64)
    grads = {}
    for backend in ("torch", "cpu"):
        w = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
        F.plif(x, w, backend=backend, surrogate_function="ATan")[0].sum().backward()
        grads[backend] = w.grad
    torch.testing.assert_close(grads["cpu"], grads["torch"], atol=0, rtol=1e-12)


def test_cpu_backward_scratch_does_not_grow_with_t():
    """x [2**20, 1]: a 4 MiB input; the backward once allocated T x 256 floats (1 GiB) per task."""
    code = (
        "import resource, torch, spikeops.functional as F\n"
        "x = torch.randn(2**20, 1, requires_grad=True)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "F.lif(x, backend='cpu')[0].sum().backward()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mib = int(done.stdout.strip())
    assert grown_mib < 64, f"backward grew the resident set by {grown_mib} MiB for a 4 MiB input"


def test_long_sequences_match_the_reference_across_chunks():
    """T = 150 crosses the CPU backward's 64-step chunks (and the CUDA one's register chunks)."""
    torch.manual_seed(2)
    x = torch.randn(150, 37, dtype=torch.float64) * 0.6 + 0.3
    grads = {}
    for backend in ("torch", "cpu"):
        xi = x.clone().requires_grad_(True)
        w = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        spikes, v_last, v_seq = F.plif(xi, w, backend=backend, store_v_seq=True, surrogate_function="ATan")
        (spikes.sum() + v_seq.square().sum() + v_last.sum()).backward()
        grads[backend] = (spikes, xi.grad, w.grad)
    assert torch.equal(grads["cpu"][0], grads["torch"][0])
    torch.testing.assert_close(grads["cpu"][1], grads["torch"][1], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grads["cpu"][2], grads["torch"][2], atol=1e-9, rtol=1e-10)


def _cfg(**overrides):
    kw = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate=0, alpha=4.0)
    kw.update(overrides)
    return make_config(**kw).as_list()


@pytest.mark.parametrize("op", ["neuron_forward", "neuron_forward_triton"])
@pytest.mark.parametrize("case, match", [
    ("short cfg", "cfg"), ("v0 shape", "v0"), ("x 3-d", "x"), ("leak for LIF", "leak"), ("no leak for PLIF", "leak"),
    ("store_v_last str", "store_v_last"),
])
def test_registered_forward_ops_check_their_arguments(op, case, match):
    x, v0, leak, cfg = torch.randn(3, 5), torch.zeros(5), None, _cfg()
    flags = (False,)
    if case == "short cfg":
        cfg = cfg[:-1]
    elif case == "v0 shape":
        v0 = torch.zeros(6)
    elif case == "x 3-d":
        x = torch.randn(3, 5, 1)
    elif case == "leak for LIF":
        leak = torch.tensor([0.5])
    elif case == "store_v_last str":
        flags = (False, "no")
    else:
        cfg = _cfg(tau=None, learnable_tau=True)
    with pytest.raises((ValueError, RuntimeError), match=match):
        getattr(torch.ops.spikeops, op)(x, v0, leak, cfg, *flags)


@pytest.mark.parametrize("op", ["neuron_backward", "neuron_backward_triton"])
def test_registered_backward_ops_check_gradient_shapes(op):
    x, v0 = torch.randn(3, 5), torch.zeros(5)
    with pytest.raises((ValueError, RuntimeError), match="grad_spikes"):
        getattr(torch.ops.spikeops, op)(torch.randn(3, 4), None, None, x, v0, None, _cfg(), False)



@pytest.mark.parametrize("argument, value", [("v_threshold", 1e-46), ("v_threshold", 1e39), ("tau", 1e39)])
def test_hyper_parameters_float32_cannot_hold_are_refused(argument, value):
    """Finite in float64 but 0 or Inf in float32 (the kernels' arithmetic): refused, naming the argument."""
    with pytest.raises(ValueError, match=f"{argument}: expected a number that float32 represents"):
        F.lif(torch.ones(2, 3), **{argument: value})


def test_plif_with_zero_neurons_has_a_zero_leak_gradient():
    x = torch.ones(3, 0, requires_grad=True)
    w = torch.tensor(0.1, requires_grad=True)
    F.plif(x, w, backend="cpu")[0].sum().backward()
    assert w.grad == 0
