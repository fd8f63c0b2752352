"""spikeops.legacy: model files written against ``spikingjelly.clock_driven`` (tests/legacy_models/, in the style
of the QKFormer, Spikformer and Spike-Driven-Transformer v2 code bases) run unchanged on spikeops, give the
logits and gradients of the same file on SpikingJelly 2.0 neurons, and exchange checkpoints strictly."""
import io
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import spikeops
import spikeops.legacy
from spikeops.legacy import LegacyUnsupportedError

from conftest import BACKEND_DEVICE
from legacy_flavours import clock_driven, load_model_file

pytest.importorskip("spikingjelly.activation_based.neuron")

MODELS = {"qkformer_style": "TinyQKFormer", "spikformer_style": "TinySpikformer", "sdt_style": "TinySDT"}
BACKENDS = ["cpu", "triton"]


@pytest.fixture(autouse=True)
def _no_leak():
    yield
    spikeops.legacy.uninstall()
    assert not spikeops.legacy.installed()


def build(name, flavour, backend="torch", seed=0):
    namespace = load_model_file(name, flavour, backend)
    torch.manual_seed(seed)
    return namespace[MODELS[name]](), namespace


def forward_backward(model, x, functional):
    functional.reset_net(model)
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return out.detach(), x.grad.detach(), grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_same_logits_and_gradients_as_spikingjelly(name, backend):
    device = BACKEND_DEVICE[backend]
    ref, ref_ns = build(name, "spikingjelly")
    ours, ours_ns = build(name, "spikeops", backend)
    neurons = [m for m in ours.modules() if isinstance(m, spikeops.BaseNeuron)]
    assert neurons and all(m.backend == backend for m in neurons)
    assert not any(type(m).__module__.startswith("spikingjelly") for m in ours.modules())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.to(device), ours.to(device)
    x = torch.rand(2, 3, 16, 16, device=device) * 2
    for step in range(2):  # two batches with reset_net in between, as the training scripts do
        out_ref, gx_ref, g_ref = forward_backward(ref, x, ref_ns["__clock_driven__"].functional)
        out, gx, g = forward_backward(ours, x, ours_ns["__clock_driven__"].functional)
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
        assert g.keys() == g_ref.keys()
        for key in g:
            torch.testing.assert_close(g[key], g_ref[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
        ref.zero_grad(), ours.zero_grad()
    assert out.abs().sum() > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoints_round_trip_strictly(name):
    ref, _ = build(name, "spikingjelly", seed=1)
    ours, _ = build(name, "spikeops", "cpu", seed=2)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same names, same order
    for source, target in ((ref, ours), (ours, ref)):
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        target.load_state_dict(torch.load(buffer), strict=True)
        for (k, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
            assert torch.equal(a, b), k
    plif = [k for k in ours.state_dict() if k.endswith("lif.w")]
    if name != "spikformer_style":
        assert plif, "the PLIF's learnable w keeps its legacy name"


def test_training_step_changes_parameters_and_plif_w():
    model, ns = build("qkformer_style", "spikeops", "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    w_before = model.stem_lif.w.detach().clone()
    ns["__clock_driven__"].functional.reset_net(model)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(2, 3, 16, 16) * 2), torch.tensor([0, 3]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.stem_lif.w.detach(), w_before)


def test_legacy_defaults_and_state():
    with clock_driven("spikeops", "cpu") as cd:
        n = cd.neuron.MultiStepLIFNode()
        assert (n.tau, n.decay_input, n.v_threshold, n.v_reset, n.detach_reset) == (2.0, True, 1.0, 0.0, False)
        assert n.surrogate_function == spikeops.surrogate.Sigmoid(alpha=4.0)
        assert n.legacy_backend == "torch" and n.backend == "cpu"
        assert isinstance(n, cd.neuron.LIFNode) and n.step_mode == "m"
        assert isinstance(cd.neuron.MultiStepParametricLIFNode(), cd.neuron.ParametricLIFNode)
        assert isinstance(cd.neuron.MultiStepIFNode(), cd.neuron.IFNode)
        assert cd.neuron.LIFNode().step_mode == "s"
        x = torch.ones(3, 4) * 0.8
        s = n(x)
        assert s.shape == (3, 4) and isinstance(n.v, torch.Tensor)
        cd.functional.reset_net(n)
        assert n.v == 0.0
        # single-step legacy neuron keeps v between calls, like the legacy LIFNode
        single = cd.neuron.LIFNode(tau=2.0)
        first = single(torch.full((4,), 1.5))
        second = single(torch.full((4,), 1.5))
        assert first.sum() == 0 and second.sum() == 4
        # positional arguments in the legacy order
        p = cd.neuron.MultiStepParametricLIFNode(3.0, False, 0.5, None)
        assert abs(p.tau - 3.0) < 1e-5 and p.decay_input is False and p.v_threshold == 0.5 and p.v_reset is None
        assert cd.surrogate.ATan().alpha == 2.0 and cd.surrogate.Sigmoid().alpha == 4.0


def test_spikingjelly_2_still_importable_next_to_legacy():
    with clock_driven("spikeops") as cd:
        import spikingjelly
        from spikingjelly.activation_based import neuron as sj_neuron
        from spikingjelly.clock_driven import neuron, functional
        assert spikingjelly.clock_driven is cd
        assert issubclass(neuron.MultiStepLIFNode, spikeops.LIF)
        assert hasattr(sj_neuron, "LIFNode")
        # SpikingJelly 2.0's helpers come through the legacy functional module
        assert callable(functional.first_spike_index)
        # legacy reset_net resets SpikingJelly 2.0 neurons too
        sj = sj_neuron.LIFNode(step_mode="m")
        sj(torch.ones(2, 3))
        functional.reset_net(torch.nn.Sequential(sj))
        assert sj.v == 0.0


def test_unknown_arguments_raise_type_error_naming_them():
    with clock_driven("spikeops") as cd:
        with pytest.raises(TypeError, match=r"MultiStepLIFNode: unknown argument\(s\) 'step_mode', 'store_v_seq'"):
            cd.neuron.MultiStepLIFNode(tau=2.0, step_mode="m", store_v_seq=True)
        with pytest.raises(TypeError, match=r"LIFNode: unknown argument\(s\) 'backend'"):
            cd.neuron.LIFNode(backend="cupy")  # the single-step legacy LIFNode has no backend argument
        with pytest.raises(TypeError, match=r"MultiStepParametricLIFNode: unknown argument\(s\) 'tau'"):
            cd.neuron.MultiStepParametricLIFNode(tau=2.0)
        with pytest.raises(TypeError, match=r"MultiStepIFNode: unknown argument\(s\) 'tau'"):
            cd.neuron.MultiStepIFNode(tau=2.0)


@pytest.mark.parametrize("module, name, instead", [
    ("neuron", "QIFNode", r"spikeops\.QIF .*activation_based\.neuron\.QIFNode"),
    ("neuron", "EIFNode", r"spikeops\.EIF .*activation_based\.neuron\.EIFNode"),
    ("neuron", "MultiStepEIFNode", r"spikeops\.EIF .*step_mode='m'"),
    ("neuron", "LIAFNode", "activation_based.neuron.LIAFNode"),
    ("neuron", "GeneralNode", "activation_based.neuron.GeneralNode"),
    ("neuron", "BaseNode", "MultiStepLIFNode"),
    ("surrogate", "PiecewiseLeakyReLU", "activation_based.surrogate.PiecewiseLeakyReLU"),
    ("layer", "NeuNorm", "activation_based.layer.NeuNorm"),
])
def test_unsupported_classes_raise_naming_class_and_replacement(module, name, instead):
    with clock_driven("spikeops"):
        namespace = {}
        exec(f"from spikingjelly.clock_driven.{module} import {name}", namespace)  # importing works
        with pytest.raises(LegacyUnsupportedError, match=rf"clock_driven\.{module}\.{name} is not supported.*{instead}"):
            namespace[name]()


def test_refused_options():
    with clock_driven("spikeops") as cd:
        with pytest.raises(LegacyUnsupportedError, match="backend='lava'"):
            cd.neuron.MultiStepLIFNode(backend="lava")
        with pytest.raises(ValueError, match="'torch' or 'cupy'"):
            cd.neuron.MultiStepLIFNode(backend="cuda")
        with pytest.raises(ValueError, match="spiking=False"):
            cd.surrogate.Sigmoid(spiking=False)
    with pytest.raises(ValueError, match="backend: expected one of"):
        spikeops.legacy.install(backend="cupy")


def test_uninstall_restores_sys_modules():
    before = sys.modules.get("spikingjelly.clock_driven")
    spikeops.legacy.install()
    assert spikeops.legacy.installed()
    spikeops.legacy.uninstall()
    assert sys.modules.get("spikingjelly.clock_driven") is before


def run_python(code_or_args, tmp_path, env_extra=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]), **(env_extra or {}))
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)


def test_module_runner_runs_a_script_unchanged(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, spikeops
        from spikingjelly.clock_driven.neuron import MultiStepLIFNode
        from spikingjelly.clock_driven import functional
        n = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        s = n(torch.full((4, 3), 2.0))
        functional.reset_net(n)
        print("ARGV", sys.argv)
        print("CLASS", isinstance(n, spikeops.LIF), n.backend, int(s.sum()))
    """))
    result = run_python(["-m", "spikeops.legacy", "--backend", "torch", str(script), "--epochs", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"ARGV ['{script}', '--epochs', '1']" in result.stdout
    assert "CLASS True torch 12" in result.stdout
    bad = run_python(["-m", "spikeops.legacy", str(tmp_path / "missing.py")], tmp_path)
    assert bad.returncode != 0 and "no such script" in bad.stderr


def test_install_without_spikingjelly(tmp_path):
    # sys.modules["spikingjelly"] = None makes `import spikingjelly` fail, as on a machine without it
    code = ("import sys; sys.modules['spikingjelly'] = None\n"
            "import spikeops.legacy, torch; spikeops.legacy.install(backend='torch')\n"
            "from spikingjelly.clock_driven import neuron, functional, layer, surrogate\n"
            "n = neuron.MultiStepLIFNode(); print(int(n(torch.full((4, 2), 2.0)).sum()))\n")
    result = run_python(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"
