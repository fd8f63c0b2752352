"""One SpikingJelly 2.0 zoo model, as the user has it and after `spikeops.convert`: a training step
(reset_net, forward, backward) of a small CIFAR-style Spikformer, in one run.

Peers: "spikingjelly" is the unconverted model (SpikingJelly 2.0's own LIFNode kernels). The spikeops
backends ("cpu", "torch", "cuda", "triton") are the same model converted with that backend: same
weights, same input, the same spikes and gradients (tests/test_convert_models.py checks that).
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import DEVICES, SPIKEOPS_BACKENDS, require, run_case
from spikeops import convert

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import functional  # noqa: E402
from spikingjelly.activation_based.model import spikformer  # noqa: E402

PEER = "spikingjelly"
# T, batch, image side, embedding width, heads, blocks: spikformer_cifar10's layout at a width
# that keeps the default run short on a laptop CPU.
SMALL = dict(T=4, batch=2, image=16, embed_dims=64, num_heads=4, depths=2)
LARGE = dict(T=4, batch=16, image=32, embed_dims=384, num_heads=12, depths=4)  # spikformer_cifar10 itself


def build(config, backend, device):
    torch.manual_seed(0)
    model = spikformer.Spikformer(T=config["T"], img_size_h=config["image"], img_size_w=config["image"],
                                  patch_size=4, num_classes=10, embed_dims=config["embed_dims"],
                                  num_heads=config["num_heads"], depths=config["depths"]).to(device)
    if backend != PEER:
        model, report = convert(model, backend=backend, inplace=True, strict=True)
    return model


def neuron_steps(model, x) -> int:
    """T x neurons summed over every spiking neuron of the model, for the throughput column."""
    from spikingjelly.activation_based import neuron as sj_neuron

    import spikeops
    counted = []
    hooks = [m.register_forward_hook(lambda m, args, out: counted.append(out.numel()))
             for m in model.modules() if isinstance(m, (sj_neuron.BaseNode, spikeops.BaseNeuron))]
    with torch.no_grad():
        functional.reset_net(model)
        model(x)
    for hook in hooks:
        hook.remove()
    return sum(counted)


def bench_training_step(benchmark, config, backend, device):
    require(backend, device)
    model = build(config, backend, device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(config["batch"], 3, config["image"], config["image"], generator=gen).to(device)

    def step():
        functional.reset_net(model)
        model.zero_grad(set_to_none=True)
        logits = model(x)
        logits.mean(0).logsumexp(-1).sum().backward()
        return logits

    shape = f"Spikformer[T={config['T']},B={config['batch']},{config['image']}x{config['image']}," \
            f"dim={config['embed_dims']},depth={config['depths']}]"
    run_case(benchmark, step, group=f"convert {shape} float32 {device} fwd+bwd", device=device,
             neuron_steps=neuron_steps(model, x), op="convert", pass_="fwd+bwd", model=shape,
             parameters=sum(p.numel() for p in model.parameters()))


DEVICE_PARAMS = [pytest.param(d, id=d) for d in DEVICES]
BACKENDS = (PEER,) + SPIKEOPS_BACKENDS


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_spikformer_training_step(benchmark, backend, device):
    bench_training_step(benchmark, SMALL, backend, device)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_spikformer_cifar10_training_step(benchmark, backend, device):
    bench_training_step(benchmark, LARGE, backend, device)
