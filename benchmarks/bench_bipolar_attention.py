"""Bipolar self-attention (ternary Q/K, Shiftmax): each spikeops backend against the pure-PyTorch
form ("torch", spikeops.ops.bipolar_attention.naive, which holds the [N, N] scores), forward
("fwd") and forward+backward ("fwd+bwd"), for Shiftmax and the softmax ablation.

Default run: one head at the issue's shape (T=4, N=196, d=64) with batch 8, so the file stays under
~30 s on a small CPU; six heads (C=384, a QKFormer stage-3 width) are marked slow.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import DEVICES, SPIKEOPS_BACKENDS, require, run_case
from spikeops.ops.bipolar_attention.op import bipolar_attention

BATCH8_SHAPE = (4, 8, 1, 196, 64)   # [T, B, h, N, d]
WIDE_SHAPE = (4, 8, 6, 196, 64)

# Short timing windows keep the default run of this file under ~30 s on a 2-core CPU.
pytestmark = pytest.mark.benchmark(max_time=0.25, min_rounds=3)


def bench(benchmark, *, norm: str, backend: str, shape, device: str, backward: bool, dtype=torch.float32):
    require(backend, device)
    gen = torch.Generator().manual_seed(0)

    def ternary():
        signs = torch.randint(0, 2, shape, generator=gen) * 2 - 1
        return (signs * (torch.rand(shape, generator=gen) < 0.3)).to(device=device, dtype=dtype).requires_grad_(True)

    q, k = ternary(), ternary()
    v = (torch.rand(shape, generator=gen) < 0.3).to(device=device, dtype=dtype).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    inputs = (q, k, v)

    def forward():
        return bipolar_attention(q, k, v, 1.0, norm, check_ternary=False, backend=backend)

    if backward:
        def fn():
            return torch.autograd.grad(forward(), inputs, grad_out)
    else:
        fn = forward
    pass_ = "fwd+bwd" if backward else "fwd"
    T, B, h, N, d = shape
    op = f"bipolar_attention[{norm}]"
    group = f"{op} [{T},{B},{h},{N},{d}] {str(dtype).removeprefix('torch.')} {device} {pass_}"
    run_case(benchmark, fn, group=group, device=device, neuron_steps=None, inputs=inputs, op=op, pass_=pass_,
             T=T, B=B, heads=h, N=N, d=d, dtype=str(dtype))


DEVICE_PARAMS = [pytest.param(d, id=d) for d in DEVICES]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SPIKEOPS_BACKENDS)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("norm", ["shiftmax", "softmax"])
def test_bipolar_attention(benchmark, norm, backend, backward, device):
    bench(benchmark, norm=norm, backend=backend, shape=BATCH8_SHAPE, device=device, backward=backward)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SPIKEOPS_BACKENDS)
def test_bipolar_attention_wide(benchmark, backend, device):
    bench(benchmark, norm="shiftmax", backend=backend, shape=WIDE_SHAPE, device=device, backward=True)
