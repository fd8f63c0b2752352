"""The ops are real torch.library operators: schemas, CPU/CUDA kernels, fake kernels, autograd,
opcheck, and torch.compile(fullgraph=True) of a module that uses them."""
import os
import shutil

import pytest
import torch

import spikeops
from spikeops.ops.neuron.config import make_config

pytestmark = pytest.mark.skipif(not spikeops.backends.extension_available(), reason="spikeops._C not built")


def test_cpu_and_cuda_kernels_are_registered():
    for name in ("spikeops::neuron_forward", "spikeops::neuron_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
        if spikeops.backends.cuda_kernels_compiled():
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")


@pytest.mark.skipif(torch.version.cuda is None or shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                    reason="torch is a CPU build or no nvcc: the CUDA kernels are not expected to be compiled")
def test_extension_was_built_with_cuda_kernels():
    """Where torch is a CUDA build and nvcc exists (CI), setup.py must have compiled the CUDA kernels."""
    assert spikeops.backends.cuda_kernels_compiled()


def test_surrogate_ids_agree_between_python_and_cpp():
    assert spikeops.backends._C.surrogate_names() == [k.name for k in spikeops.surrogate.SURROGATES]


def _cfg(**overrides):
    kw = dict(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate=0, alpha=4.0)
    kw.update(overrides)
    return make_config(**kw).as_list()


@pytest.mark.parametrize("store_v_last", [False, True])
@pytest.mark.parametrize("store_v_seq", [False, True])
@pytest.mark.parametrize("plif", [False, True])
def test_opcheck_forward_and_backward(store_v_seq, store_v_last, plif):
    x = torch.randn(4, 10) + 0.5
    v0 = torch.rand(10)
    leak = torch.tensor([0.4]) if plif else None
    cfg = _cfg(tau=None, learnable_tau=True) if plif else _cfg()
    torch.library.opcheck(torch.ops.spikeops.neuron_forward.default, (x, v0, leak, cfg, store_v_seq, store_v_last))
    grad = torch.randn(4, 10)
    gv_seq = torch.randn(4, 10) if store_v_seq else None
    torch.library.opcheck(torch.ops.spikeops.neuron_backward.default,
                          (grad, gv_seq, torch.randn(10), x, v0, leak, cfg, plif))


@pytest.mark.parametrize("store_v_last", [False, True])
def test_opcheck_triton_ops(store_v_last):
    x = torch.randn(3, 8) + 0.5
    v0 = torch.zeros(8)
    cfg = _cfg()
    torch.library.opcheck(torch.ops.spikeops.neuron_forward_triton.default, (x, v0, None, cfg, False, store_v_last),
                          test_utils=("test_schema", "test_faketensor"))


class _Block(torch.nn.Module):
    def __init__(self, neuron):
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)
        self.neuron = neuron

    def forward(self, x):
        self.neuron.reset()
        return self.neuron(self.fc(x))


@pytest.mark.parametrize("make", [lambda: spikeops.LIF(step_mode="m", backend="cpu"),
                                  lambda: spikeops.PLIF(step_mode="m", backend="cpu"),
                                  lambda: spikeops.IF(step_mode="m", backend="cpu", v_reset=None)])
def test_torch_compile_fullgraph(make):
    torch.manual_seed(0)
    eager = _Block(make())
    twin = _Block(make())
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin, fullgraph=True)
    x = torch.randn(4, 2, 16)
    out_e, out_c = eager(x), compiled(x)
    assert torch.equal(out_e, out_c)
    out_e.sum().backward()
    out_c.sum().backward()
    for p_e, p_c in zip(eager.parameters(), twin.parameters()):
        torch.testing.assert_close(p_e.grad, p_c.grad)
