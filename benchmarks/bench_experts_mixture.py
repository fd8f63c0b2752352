"""Spiking experts mixture (SEMM gated sum): each spikeops backend against the pure-PyTorch form
("torch", spikeops.ops.experts_mixture.naive, which materialises every gated product), forward and
forward+backward, with a 20% router firing rate.

Default run: the EMSA shape of the issue (T=4, N=196, m=4 experts, C=384) at batch 8, with short
timing windows so the file stays under ~30 s on a small CPU.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import DEVICES, SPIKEOPS_BACKENDS, require, run_case
from spikeops.ops.experts_mixture.op import experts_mixture

BATCH8_SHAPE = (4, 8, 196, 4, 384)   # [T, B, N, m, C]
ROUTER_RATE = 0.2

# Short timing windows keep the default run of this file under ~30 s on a 2-core CPU.
pytestmark = pytest.mark.benchmark(max_time=0.25, min_rounds=3)


def bench(benchmark, *, backend: str, shape, device: str, backward: bool, dtype=torch.float32):
    require(backend, device)
    gen = torch.Generator().manual_seed(0)
    router = (torch.rand(shape[:-1], generator=gen) < ROUTER_RATE).to(device=device, dtype=dtype).requires_grad_(True)
    experts = (torch.rand(shape, generator=gen) < 0.3).to(device=device, dtype=dtype).requires_grad_(True)
    grad_out = torch.randn(*shape[:-2], shape[-1], generator=gen).to(device=device, dtype=dtype)
    inputs = (router, experts)

    def forward():
        return experts_mixture(router, experts, backend=backend)

    if backward:
        def fn():
            return torch.autograd.grad(forward(), inputs, grad_out)
    else:
        fn = forward
    pass_ = "fwd+bwd" if backward else "fwd"
    T, B, N, m, C = shape
    group = f"experts_mixture [{T},{B},{N},{m},{C}] {str(dtype).removeprefix('torch.')} {device} {pass_}"
    run_case(benchmark, fn, group=group, device=device, neuron_steps=None, inputs=inputs, op="experts_mixture",
             pass_=pass_, T=T, B=B, N=N, experts=m, C=C, router_rate=ROUTER_RATE, dtype=str(dtype))


DEVICE_PARAMS = [pytest.param(d, id=d) for d in DEVICES]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", SPIKEOPS_BACKENDS)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_experts_mixture(benchmark, backend, backward, device):
    bench(benchmark, backend=backend, shape=BATCH8_SHAPE, device=device, backward=backward)
