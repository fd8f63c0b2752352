"""Spiking attention operators (Q-K token / channel attention, SDSA, SSA): each spikeops backend
against the pure-PyTorch form ("torch", spikeops.ops.attention.naive), forward ("fwd") and
forward+backward ("fwd+bwd"), on binary Q/K/V spikes.

Default run: the QKFormer-sized shape of issue #5, [T=4, B=8, C=384, N=196] with 6 heads, forward and
forward+backward, with few short rounds so the file stays under ~30 s on a 2-core CPU.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import DEVICES, SPIKEOPS_BACKENDS, require, run_case
from spikeops.ops import attention as A

# Short timing windows keep the default run of this file under ~30 s on a 2-core CPU.
pytestmark = pytest.mark.benchmark(max_time=0.25, min_rounds=3)

HEADS = 6
QKFORMER_SHAPE = (4, 8, 384, 196)   # [T, B, C, N]

OPS = {
    "qk_token_attention": lambda q, k, v, backend: A.qk_token_attention(q, k, HEADS, backend=backend),
    "qk_channel_attention": lambda q, k, v, backend: A.qk_channel_attention(q, k, HEADS, backend=backend),
    "spike_driven_attention": lambda q, k, v, backend: A.spike_driven_attention(q, k, v, HEADS, backend=backend),
    "spiking_self_attention": lambda q, k, v, backend: A.spiking_self_attention(q, k, v, HEADS, spike_operands=True,
                                                                                backend=backend),
}


def bench_attention(benchmark, *, op: str, backend: str, shape, device: str, backward: bool,
                    dtype=torch.float32):
    require(backend, device)
    gen = torch.Generator().manual_seed(0)
    q, k, v = ((torch.rand(shape, generator=gen) < rate).to(device=device, dtype=dtype).requires_grad_(True)
               for rate in (0.2, 0.3, 0.3))
    grad_out = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    inputs = (q, k, v)

    def forward():
        return OPS[op](q, k, v, backend)

    if backward:
        def fn():
            return torch.autograd.grad(forward(), inputs, grad_out, allow_unused=True)
    else:
        fn = forward
    pass_ = "fwd+bwd" if backward else "fwd"
    T, B, C, N = shape
    group = f"{op} [{T},{B},{C},{N}] h={HEADS} {str(dtype).removeprefix('torch.')} {device} {pass_}"
    run_case(benchmark, fn, group=group, device=device, neuron_steps=None, inputs=inputs, op=op, pass_=pass_,
             T=T, B=B, C=C, N=N, heads=HEADS, dtype=str(dtype))


DEVICE_PARAMS = [pytest.param(d, id=d) for d in DEVICES]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SPIKEOPS_BACKENDS)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("op", list(OPS))
def test_attention(benchmark, op, backend, backward, device):
    bench_attention(benchmark, op=op, backend=backend, shape=QKFORMER_SHAPE, device=device, backward=backward)
