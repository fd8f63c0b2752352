"""spikeops.convert on SpikingJelly 2.0's own model zoo (random weights, small configs): after
conversion every neuron emits the same spikes, the logits match and so do all parameter gradients
after one backward, on the fused `cpu` and `triton` backends."""
import pytest
import torch
from torch import nn

import spikeops
from spikeops import convert

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import functional, neuron  # noqa: E402
from spikingjelly.activation_based.model import (  # noqa: E402
    qkformer, sew_resnet, spike_driven_transformer, spikformer,
)


def sew_resnet10(spiking_neuron, step_mode, **neuron_kwargs):
    """The zoo's SEWResNet with one BasicBlock per stage (sew_resnet18 has two): same code, half the cost."""
    model = sew_resnet.SEWResNet(sew_resnet.BasicBlock, [1, 1, 1, 1], spiking_neuron=spiking_neuron, cnf="ADD",
                                 num_classes=5, **neuron_kwargs)
    functional.set_step_mode(model, step_mode)
    return model if step_mode == "m" else StepByStep(model)


class StepByStep(nn.Module):
    """Feeds a single-step model one time step at a time, as SpikingJelly's single-step users do."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x_seq):
        return torch.stack([self.model(x) for x in x_seq])


# name: (builder, input shape). The transformers repeat an image over T; SEW-ResNet takes [T, B, C, H, W].
ZOO = {
    "spikformer": (lambda: spikformer.Spikformer(T=2, img_size_h=16, img_size_w=16, patch_size=4, num_classes=5,
                                                 embed_dims=32, num_heads=2, depths=1), (2, 3, 16, 16)),
    "qkformer": (lambda: qkformer.QKFormer(T=2, num_classes=5, embed_dims=32, num_heads=(1, 2, 2),
                                           depths=(1, 1, 1)), (2, 3, 32, 32)),
    "spike_driven_transformer": (lambda: spike_driven_transformer.SpikeDrivenTransformer(
        T=2, num_classes=5, embed_dims=32, num_heads=2, depths=1), (2, 3, 32, 32)),
    "sew_resnet10_plif": (lambda: sew_resnet10(neuron.ParametricLIFNode, "m", init_tau=2.5, detach_reset=True),
                          (2, 2, 3, 16, 16)),
    "sew_resnet10_lif_single_step": (lambda: sew_resnet10(neuron.LIFNode, "s", tau=1.5, v_reset=None),
                                     (2, 2, 3, 16, 16)),
}


def record_spikes(model, names):
    spikes = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda module, args, out, name=name: spikes.setdefault(name, []).append(out.detach().cpu()))
    return spikes


def forward_backward(model, x):
    logits = model(x)
    loss_weight = torch.linspace(-1, 1, logits.numel(), device=logits.device).view_as(logits)
    (logits * loss_weight).sum().backward()
    grads = {name: p.grad.detach().cpu() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach().cpu(), grads


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("model_name", list(ZOO))
def test_zoo_model_matches_spikingjelly_after_convert(model_name, backend):
    build, input_shape = ZOO[model_name]
    device = BACKEND_DEVICE[backend]
    reference = build().to(device)
    converted, report = convert(reference, backend=backend)

    assert report.complete, str(report)
    sj_neuron_names = [name for name, m in reference.named_modules() if isinstance(m, neuron.BaseNode)]
    assert sorted(r.name for r in report.replaced) == sorted(sj_neuron_names)
    assert all(isinstance(converted.get_submodule(name), spikeops.BaseNeuron) for name in sj_neuron_names)
    assert not any(isinstance(m, neuron.BaseNode) for m in converted.modules())

    ref_spikes = record_spikes(reference, sj_neuron_names)
    our_spikes = record_spikes(converted, sj_neuron_names)
    x = torch.rand(input_shape, device=device)
    ref_logits, ref_grads = forward_backward(reference, x)
    logits, grads = forward_backward(converted, x)

    assert set(our_spikes) == set(ref_spikes) == set(sj_neuron_names)
    for name in sj_neuron_names:
        assert len(our_spikes[name]) == len(ref_spikes[name]) >= 1, name
        for ours, ref in zip(our_spikes[name], ref_spikes[name]):
            assert torch.equal(ours, ref), f"spikes differ at {name}"
    # The comparison is only meaningful if the neurons are neither silent nor saturated.
    firing = torch.cat([s.flatten() for steps in ref_spikes.values() for s in steps])
    assert 0.01 < firing.mean().item() < 0.99
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(reference.parameters()))
    for name, grad in grads.items():
        scale = max(1.0, ref_grads[name].abs().max().item())
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
