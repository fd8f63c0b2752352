"""Bad input to the neuron operators: a clear error naming the argument, raised before any kernel runs."""
import pytest
import torch

import spikeops
from spikeops import functional as F
from spikeops.ops.neuron import op as neuron_op


@pytest.fixture
def no_kernel(monkeypatch):
    """Any kernel launch during the test fails it."""
    def launched(*args, **kwargs):
        raise AssertionError("a kernel was launched before the input was validated")
    monkeypatch.setattr(neuron_op.NeuronFunction, "apply", launched)
    monkeypatch.setattr(neuron_op.naive, "multi_step", launched)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "auto"])
@pytest.mark.parametrize("call, error, message", [
    (lambda b: F.lif(torch.empty(0, 3), backend=b), ValueError, "T >= 1"),
    (lambda b: F.lif(torch.tensor(1.0), backend=b), ValueError, "[T, *]"),
    (lambda b: F.lif(torch.ones(4, 3), torch.zeros(5), backend=b), ValueError, "v0: expected shape (3,)"),
    (lambda b: F.lif(torch.ones(4, 3, dtype=torch.int32), backend=b), TypeError, "x: expected a floating dtype"),
    (lambda b: F.lif(torch.ones(4, 3, dtype=torch.complex64), backend=b), TypeError, "x: expected a floating dtype"),
    (lambda b: F.lif(torch.ones(4, 3), tau=1.0, backend=b), ValueError, "tau: must be > 1"),
    (lambda b: F.lif(torch.ones(4, 3), tau=float("nan"), backend=b), ValueError, "tau: expected a finite number"),
    (lambda b: F.lif(torch.ones(4, 3), v_threshold=float("inf"), backend=b), ValueError, "v_threshold"),
    (lambda b: F.lif(torch.ones(4, 3), torch.zeros(3, device="meta"), backend=b), ValueError, "v0: expected a tensor on cpu"),
    (lambda b: F.lif(torch.ones(4, 3), surrogate_function="Tanh", backend=b), ValueError, "surrogate_function: unknown name"),
    (lambda b: F.lif(torch.ones(4, 3), surrogate_function=spikeops.surrogate.ATan(-1.0), backend=b), ValueError, "alpha"),
    (lambda b: F.plif(torch.ones(4, 3), torch.zeros(2), backend=b), ValueError, "w: expected a one-element tensor"),
    (lambda b: F.lif([[1.0]], backend=b), TypeError, "x: expected a torch.Tensor"),
    (lambda b: F.lif(torch.ones(4, 3), store_v_last=1, backend=b), TypeError, "store_v_last: expected a bool"),
])
def test_bad_input_raises_before_launch(no_kernel, backend, call, error, message):
    with pytest.raises(error, match=__import__("re").escape(message)):
        call(backend)


def test_unknown_backend(no_kernel):
    with pytest.raises(ValueError, match="backend: expected one of"):
        F.lif(torch.ones(2, 2), backend="cupy")


def test_cuda_backend_on_cpu_tensor_says_why(no_kernel):
    with pytest.raises(RuntimeError, match="backend='cuda' is unavailable: .*CUDA tensors|built without CUDA"):
        F.lif(torch.ones(2, 2), backend="cuda")


def test_triton_rejects_float64(no_kernel):
    with pytest.raises(TypeError, match="'triton' backend supports float32"):
        F.lif(torch.ones(2, 2, dtype=torch.float64), backend="triton")


@pytest.mark.parametrize("make, message", [
    (lambda: spikeops.LIF(tau=0.5), "tau: must be > 1"),
    (lambda: spikeops.LIF(step_mode="x"), "step_mode"),
    (lambda: spikeops.PLIF(init_tau=1.0), "init_tau"),
    (lambda: spikeops.IF(v_reset=float("nan")), "v_reset"),
])
def test_bad_module_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
