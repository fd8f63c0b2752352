"""spikeops.convert: what is carried over (arguments, surrogate, PLIF's parameter, state, hooks), what
is left alone and reported, strict mode, state round-trips mid-sequence, and SpikingJelly's own
tooling (reset_net, set_step_mode, detach_net, monitors, containers) on converted models."""
import copy

import pytest
import torch
from torch import nn

import spikeops
from spikeops import ConversionError, convert

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import functional, layer, monitor, neuron, surrogate  # noqa: E402


def mixed_net(step_mode="m"):
    """Every converted class with non-default options, between stateless layers."""
    return nn.Sequential(
        layer.Linear(6, 8, step_mode=step_mode),
        neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.7, v_reset=None, detach_reset=True,
                       surrogate_function=surrogate.ATan(alpha=3.0), step_mode=step_mode),
        layer.Linear(8, 8, step_mode=step_mode),
        neuron.ParametricLIFNode(init_tau=2.5, v_reset=-0.1, surrogate_function=surrogate.Erf(), step_mode=step_mode),
        layer.Linear(8, 5, step_mode=step_mode),
        neuron.IFNode(v_threshold=0.6, surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.5), step_mode=step_mode),
        layer.Linear(5, 3, step_mode=step_mode),
    )


def run(model, x_seq, step_mode):
    if step_mode == "m":
        return model(x_seq)
    return torch.stack([model(x) for x in x_seq])


def loss_of(out):
    return (out * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum()


def grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def neuron_v(model):
    return [m.v for m in model.modules() if isinstance(m, (neuron.BaseNode, spikeops.BaseNeuron))]


# ---------------------------------------------------------------- what is carried over
def test_arguments_and_surrogates_are_carried_over():
    model, report = convert(mixed_net(), backend="cpu")
    lif, plif, if_ = model[1], model[3], model[5]
    assert (type(lif), type(plif), type(if_)) == (spikeops.LIF, spikeops.PLIF, spikeops.IF)
    assert (lif.tau, lif.decay_input, lif.v_threshold, lif.v_reset, lif.detach_reset) == (3.0, False, 0.7, None, True)
    assert lif.surrogate_function == spikeops.surrogate.ATan(3.0)
    assert plif.tau == pytest.approx(2.5) and plif.v_reset == -0.1
    assert plif.surrogate_function == spikeops.surrogate.Erf()
    assert (if_.v_threshold, if_.surrogate_function) == (0.6, spikeops.surrogate.PiecewiseQuadratic(1.5))
    assert all(m.backend == "cpu" and m.step_mode == "m" for m in (lif, plif, if_))
    assert [(r.name, r.source, r.target) for r in report.replaced] == [
        ("1", "LIFNode", "LIF"), ("3", "ParametricLIFNode", "PLIF"), ("5", "IFNode", "IF")]
    assert report.complete and "3 neuron(s) replaced, 0 left alone" in str(report)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_converted_net_matches_spikingjelly(backend, step_mode):
    device = BACKEND_DEVICE[backend]
    reference = mixed_net(step_mode).to(device)
    converted, _ = convert(reference, backend=backend)
    x = torch.randn(5, 4, 6, device=device) * 2
    ref_out, out = run(reference, x, step_mode), run(converted, x, step_mode)
    assert torch.equal(out, ref_out)
    loss_of(ref_out).backward(), loss_of(out).backward()
    ref_grads, our_grads = grads(reference), grads(converted)
    assert ref_grads.keys() == our_grads.keys() and "3.w" in our_grads
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_inplace_keeps_parameter_objects_and_copy_leaves_the_original_alone():
    original = mixed_net()
    w = original[3].w
    copied, _ = convert(original)
    assert isinstance(original[1], neuron.LIFNode) and copied[3].w is not w
    in_place, _ = convert(original, inplace=True)
    assert in_place is original and isinstance(original[1], spikeops.LIF)
    assert original[3].w is w  # an optimizer built before conversion keeps training PLIF's tau


def test_spikingjelly_checkpoint_loads_into_converted_model():
    reference = mixed_net()
    with torch.no_grad():
        reference[3].w.fill_(0.3)
    converted, _ = convert(mixed_net())
    converted.load_state_dict(reference.state_dict())
    assert converted[3].w.item() == pytest.approx(0.3)
    assert converted.state_dict().keys() == reference.state_dict().keys()


def test_model_that_is_a_neuron_and_shared_neurons():
    single, report = convert(neuron.IFNode(step_mode="m"))
    assert isinstance(single, spikeops.IF) and report.replaced[0].name == ""
    shared = neuron.LIFNode(step_mode="m")
    model, report = convert(nn.Sequential(shared, nn.Identity(), shared))
    assert model[0] is model[2] and isinstance(model[0], spikeops.LIF)
    assert [r.name for r in report.replaced] == ["0", "2"]


def test_training_mode_and_devices_follow():
    model = mixed_net().eval()
    converted, _ = convert(model)
    assert not any(m.training for m in converted.modules())


# ---------------------------------------------------------------- what is left alone
def left_alone_net():
    precise = neuron.LIFNode(step_mode="m")
    precise._neuron_precision = (torch.float16, "fp32", "fp32")  # what spikingjelly.precision sets
    extra_state = neuron.LIFNode(step_mode="m")
    extra_state.register_memory("trace", 0.0)
    custom_reset = neuron.IFNode(step_mode="m")
    custom_reset.set_reset_value("v", torch.full((3,), 0.5))
    return nn.Sequential(
        neuron.LIFNode(step_mode="m"),
        neuron.KLIFNode(step_mode="m"),
        neuron.OTTTLIFNode(step_mode="s"),
        neuron.LIFNode(surrogate_function=surrogate.PiecewiseLeakyReLU(), step_mode="m"),
        neuron.LIFNode(surrogate_function=surrogate.Sigmoid(spiking=False), step_mode="m"),
        precise,
        extra_state,
        custom_reset,
    )


def test_unsupported_neurons_and_options_are_reported_and_left_alone():
    model = left_alone_net()
    originals = list(model)
    converted, report = convert(model, inplace=True)
    assert [r.name for r in report.replaced] == ["0"]
    reasons = {s.name: (s.source, s.reason) for s in report.left_alone}
    assert reasons.keys() == {"1", "2", "3", "4", "5", "6", "7"}
    assert reasons["1"][0] == "KLIFNode" and "no spikeops equivalent" in reasons["1"][1]
    assert reasons["2"][0] == "OTTTLIFNode" and "subclass of LIFNode" in reasons["2"][1]
    assert "PiecewiseLeakyReLU" in reasons["3"][1]
    assert "spiking=False" in reasons["4"][1]
    assert "precision" in reasons["5"][1]
    assert "trace" in reasons["6"][1]
    assert "custom reset value" in reasons["7"][1]
    assert isinstance(converted[0], spikeops.LIF)
    assert all(converted[i] is originals[i] for i in range(1, 8))
    assert not report.complete and "left alone  2: OTTTLIFNode" in str(report)


def test_strict_raises_and_changes_nothing():
    model = left_alone_net()
    before = list(model)
    with pytest.raises(ConversionError, match="7 SpikingJelly neuron") as info:
        convert(model, inplace=True, strict=True)
    assert list(model) == before and len(info.value.report.left_alone) == 7
    converted, report = convert(mixed_net(), strict=True)
    assert report.complete


def test_model_without_spikingjelly_neurons_is_returned_unchanged():
    model = nn.Sequential(nn.Linear(2, 2), spikeops.LIF())
    same, report = convert(model, inplace=True)
    assert same is model and not report.replaced and not report.left_alone


def test_bad_arguments_are_refused_before_anything_changes():
    with pytest.raises(ValueError, match="backend: expected one of"):
        convert(mixed_net(), backend="cupy")
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        convert(lambda x: x)


# ---------------------------------------------------------------- state round-trip
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_convert_mid_sequence_continues_exactly(backend, step_mode):
    device = BACKEND_DEVICE[backend]
    torch.manual_seed(1)
    reference = mixed_net(step_mode).to(device)
    model = copy.deepcopy(reference)
    x = torch.randn(7, 4, 6, device=device) * 2
    k = 3

    ref_out = torch.cat([run(reference, x[:k], step_mode), run(reference, x[k:], step_mode)])
    first = run(model, x[:k], step_mode)
    model, report = convert(model, backend=backend, inplace=True)  # state (and its autograd graph) carried over
    assert report.complete
    assert all(isinstance(v, torch.Tensor) and v.grad_fn is not None for v in neuron_v(model))
    out = torch.cat([first, run(model, x[k:], step_mode)])

    assert torch.equal(out, ref_out)
    for ours, ref in zip(neuron_v(model), neuron_v(reference)):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    loss_of(ref_out).backward(), loss_of(out).backward()
    ref_grads, our_grads = grads(reference), grads(model)
    for name in ref_grads:  # gradients cross the conversion point, PLIF's w included
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_convert_copy_mid_sequence_carries_state_and_keeps_the_original():
    reference = mixed_net()
    x = torch.randn(6, 2, 6)
    reference(x[:2])
    converted, _ = convert(reference)  # copies a state that is still attached to the graph
    ref_v = [v.detach().clone() for v in neuron_v(reference)]
    torch.testing.assert_close([v.detach() for v in neuron_v(converted)], ref_v)
    assert torch.equal(converted(x[2:]), reference(x[2:]))


# ---------------------------------------------------------------- SpikingJelly tooling
def test_reset_net_reaches_neurons_converted_in_place():
    model = mixed_net()
    functional.reset_net(model)  # primes SpikingJelly's per-network cache of resettable modules
    convert(model, inplace=True)
    model(torch.randn(3, 2, 6))
    assert all(isinstance(v, torch.Tensor) for v in neuron_v(model))
    functional.reset_net(model)
    assert [m.v for m in model if isinstance(m, spikeops.BaseNeuron)] == [0.0, -0.1, 0.0]


def test_set_step_mode_and_multi_step_container_with_single_step_neuron():
    model = nn.Sequential(layer.SeqToANNContainer(nn.Linear(6, 8)),
                          layer.MultiStepContainer(neuron.LIFNode(step_mode="s")),
                          neuron.IFNode())
    functional.set_step_mode(model, "m")
    converted, _ = convert(model)
    assert converted[1][0].step_mode == "s" and converted[2].step_mode == "m"
    x = torch.randn(4, 3, 6)
    assert torch.equal(converted(x), model(x))
    functional.set_step_mode(converted, "s")
    assert converted[2].step_mode == "s" and converted[1][0].step_mode == "s"
    functional.reset_net(converted), functional.reset_net(model)
    functional.set_step_mode(model, "s")
    assert torch.equal(converted[2](x[0]), model[2](x[0]))


def test_detach_net_cuts_the_state_from_the_graph():
    model, _ = convert(mixed_net())
    model(torch.randn(3, 2, 6, requires_grad=True))
    assert all(v.grad_fn is not None for v in neuron_v(model))
    functional.detach_net(model)
    assert all(v.grad_fn is None for v in neuron_v(model))


def test_monitors_read_spikes_and_v():
    model, _ = convert(mixed_net())
    spikes = monitor.OutputMonitor(model, spikeops.BaseNeuron)
    voltages = monitor.AttributeMonitor("v", False, model, spikeops.BaseNeuron)
    out = model(torch.randn(3, 2, 6))
    assert spikes.monitored_layers == ["1", "3", "5"] and len(spikes.records) == 3
    assert torch.equal(model[6](spikes["5"][0]), out)
    assert all(set(s.unique().tolist()) <= {0.0, 1.0} for s in spikes.records)
    assert voltages["5"][0].shape == (2, 5)


def test_hooks_registered_before_conversion_follow_the_neuron():
    model = mixed_net()
    spikes = monitor.OutputMonitor(model, neuron.BaseNode)
    convert(model, inplace=True)
    model(torch.randn(3, 2, 6))
    assert len(spikes.records) == 3
    spikes.remove_hooks()
    model(torch.randn(3, 2, 6))
    assert len(spikes.records) == 3


def test_spikeops_neurons_accept_spikingjelly_surrogates():
    ours = spikeops.LIF(surrogate_function=surrogate.ATan(alpha=3.0), step_mode="m", backend="cpu")
    ref = neuron.LIFNode(surrogate_function=surrogate.ATan(alpha=3.0), step_mode="m")
    x = torch.randn(4, 10, requires_grad=True)
    assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("name", [kind.name for kind in spikeops.surrogate.SURROGATES])
def test_every_supported_surrogate_converts_with_its_alpha(name):
    reference = neuron.LIFNode(surrogate_function=getattr(surrogate, name)(alpha=2.5), step_mode="m")
    converted, report = convert(reference, backend="cpu", strict=True)
    assert converted.surrogate_function == getattr(spikeops.surrogate, name)(2.5)
    x = torch.randn(4, 3, 11) + 0.7
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, ref_out = converted(x_ours), reference(x_ref)
    assert torch.equal(out, ref_out)
    (loss_of(out) + loss_of(converted.v)).backward(), (loss_of(ref_out) + loss_of(reference.v)).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
