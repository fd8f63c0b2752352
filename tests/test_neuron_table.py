"""The neuron table (spikeops/ops/neuron/table.py) and the neurons it generates.

* The names that cross from Python to the kernels agree: C++ exports its configuration field names and
  charge-law names, the Triton math declares its charge laws and law parameters; all match the table.
* QIF and EIF, added through the table only, match SpikingJelly 2.0's QIFNode / EIFNode on every backend
  and option: same spikes, v and gradients allclose; gradcheck in float64; convert maps them.
"""
import itertools

import pytest
import torch

import spikeops
from spikeops.kernels import neuron_math
from spikeops.ops.neuron.config import CONFIG_FIELDS, NeuronConfig, make_config
from spikeops.ops.neuron.table import CHARGE_LAWS, NEURON_KINDS

from conftest import BACKEND_DEVICE, FUSED_BACKENDS

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")


def test_cpp_reads_the_configuration_fields_by_the_tables_names():
    assert tuple(spikeops.backends._C.neuron_config_fields()) == CONFIG_FIELDS


def test_cpp_and_triton_charge_laws_follow_the_table():
    names = tuple(law.name for law in CHARGE_LAWS)
    assert tuple(spikeops.backends._C.charge_law_names()) == names
    assert neuron_math.CHARGE_LAW_NAMES == names
    for name in names:
        assert getattr(neuron_math, name.upper()).value == names.index(name)


def test_every_law_parameter_is_a_configuration_field():
    for law in CHARGE_LAWS:
        assert set(law.params) <= set(CONFIG_FIELDS), law.name
    assert set(neuron_math.LAW_PARAMS) <= set(CONFIG_FIELDS)
    # Triton receives every numeric parameter a law reads (decay_input is a compile-time flag).
    assert {p for law in CHARGE_LAWS for p in law.params} - {"decay_input"} <= set(neuron_math.LAW_PARAMS)


def test_config_round_trips_through_the_operator_list():
    cfg = make_config(charge_law="quadratic", tau=3.0, v_c=0.7, a0=1.5, v_rest=0.1, v_threshold=1.0, v_reset=-0.1,
                      detach_reset=True, surrogate=2, alpha=3.0)
    assert NeuronConfig.from_list(cfg.as_list()) == cfg
    with pytest.raises(ValueError, match="cfg: expected the 17"):
        NeuronConfig.from_list(cfg.as_list()[:-1])


def sj_pair(kind_name, backend, surrogate="Sigmoid", **opts):
    sj_sg = getattr(sj_surrogate, surrogate)(alpha=2.5)
    ref = getattr(sj_neuron, kind_name + "Node")(step_mode="m", surrogate_function=sj_sg, **opts)
    ours = getattr(spikeops, kind_name)(step_mode="m", surrogate_function=sj_sg, backend=backend, **opts)
    return ref, ours


def run(module, x, device):
    module.to(device)
    x = x.to(device).detach().clone().requires_grad_(True)
    outs = [module(x) for _ in range(2)]  # state carries over between the calls
    loss = sum((o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum() for o in outs)
    loss = loss + (module.v * 0.5).sum()  # a gradient through the final membrane too
    loss.backward()
    return [o.detach().cpu() for o in outs], module.v.detach().cpu(), x.grad.detach().cpu()


LAW_OPTIONS = {
    "QIF": [dict(), dict(tau=3.0, v_c=0.6, a0=0.7, v_rest=0.05)],
    "EIF": [dict(), dict(tau=3.0, delta_T=0.5, theta_rh=0.6, v_rest=0.05)],
}
OPTIONS = [
    dict(kind=kind, **law, v_reset=v_reset, detach_reset=detach)
    for kind in ("QIF", "EIF") for law in LAW_OPTIONS[kind]
    for v_reset, detach in itertools.product([-0.1, None], [False, True])
]


@pytest.mark.parametrize("backend", [pytest.param("torch", id="torch"), *FUSED_BACKENDS])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_matches_spikingjelly(backend, opts):
    opts = dict(opts)
    kind = opts.pop("kind")
    device = BACKEND_DEVICE.get(backend, "cpu")
    torch.manual_seed(0)
    x = torch.randn(6, 3, 37) * 0.8 + 0.4
    ref, ours = sj_pair(kind, backend, **opts)
    ref_out, ref_v, ref_gx = run(ref, x, device)
    out, v, gx = run(ours, x, device)
    assert sum(o.sum() for o in out) > 0, "the inputs must make the neurons fire"
    for a, b in zip(out, ref_out):
        assert torch.equal(a, b)
    torch.testing.assert_close(v, ref_v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", [pytest.param("torch", id="torch"), *FUSED_BACKENDS])
@pytest.mark.parametrize("kind", ["QIF", "EIF"])
@pytest.mark.parametrize("surrogate", ["ATan", "PiecewiseQuadratic", "Erf"])
def test_surrogates_and_v_seq_match_spikingjelly(backend, kind, surrogate):
    device = BACKEND_DEVICE.get(backend, "cpu")
    torch.manual_seed(1)
    x = torch.randn(5, 2, 23) * 0.8 + 0.4
    ref, ours = sj_pair(kind, backend, surrogate=surrogate, store_v_seq=True)
    ref_out, _, ref_gx = run(ref, x, device)
    out, _, gx = run(ours, x, device)
    assert torch.equal(out[1], ref_out[1])
    torch.testing.assert_close(ours.v_seq.detach().cpu(), ref.v_seq.detach().cpu(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["QIF", "EIF"])
def test_single_step_mode_matches_spikingjelly(kind):
    x = torch.randn(5, 3, 8) * 0.8 + 0.5
    ref = getattr(sj_neuron, kind + "Node")(step_mode="s")
    ours = getattr(spikeops, kind)(step_mode="s", backend="cpu")
    for t in range(5):
        assert torch.equal(ours(x[t]), ref(x[t]))
        torch.testing.assert_close(ours.v, ref.v)
    ours.reset(), ref.reset()
    assert ours.v == ref.v == -0.1


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("kind", ["QIF", "EIF"])
@pytest.mark.parametrize("v_reset", [-0.1, None])
def test_gradcheck_float64(backend, kind, v_reset):
    """BPTT through a V-dependent charge, checked numerically in float64 on the membrane (spikes are
    piecewise constant) with a detached reset, where the analytic gradient is exact."""
    neuron = getattr(spikeops, kind)(step_mode="m", backend=backend, v_reset=v_reset, detach_reset=True,
                                     store_v_seq=True)
    x = (torch.randn(4, 6, dtype=torch.float64) * 0.6 + 0.4).requires_grad_(True)
    v0 = (torch.randn(6, dtype=torch.float64) * 0.2).requires_grad_(True)

    def membrane(x, v0):
        neuron.reset()
        neuron.v = v0
        neuron(x)
        return neuron.v_seq, neuron.v

    assert torch.autograd.gradcheck(membrane, (x, v0), eps=1e-6, atol=1e-7)


def test_constructor_arguments_and_defaults_are_spikingjellys():
    import inspect
    for kind in NEURON_KINDS:
        ours = inspect.signature(getattr(spikeops, kind.name).__init__).parameters
        theirs = inspect.signature(getattr(sj_neuron, kind.spikingjelly).__init__).parameters
        shared = [name for name in theirs if name not in ("self", "surrogate_function")]
        assert [name for name in ours if name in shared] == shared
        for name in shared:
            assert ours[name].default == theirs[name].default, (kind.name, name)


@pytest.mark.parametrize("kind, bad, match", [
    ("QIF", dict(tau=1.0), "tau: must be > 1"), ("QIF", dict(a0=0.0), "a0: must be > 0"),
    ("EIF", dict(delta_T=-1.0), "delta_T: must be > 0"), ("EIF", dict(theta_rh=float("nan")), "theta_rh: expected a finite"),
    ("QIF", dict(v_threshold=-0.2), "v_threshold: must be > v_reset"), ("EIF", dict(v_rest=-0.5), "v_rest: must be >= v_reset"),
])
def test_bad_arguments_are_named(kind, bad, match):
    with pytest.raises(ValueError, match=match):
        getattr(spikeops, kind)(**bad)


def test_unknown_argument_is_a_type_error():
    with pytest.raises(TypeError, match="QIF: .*delta_T"):
        spikeops.QIF(delta_T=1.0)


@pytest.mark.parametrize("kind", ["QIF", "EIF"])
def test_convert_maps_the_spikingjelly_class(kind):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), getattr(sj_neuron, kind + "Node")(tau=3.0, step_mode="m"))
    converted, report = spikeops.convert(model, backend="cpu")
    assert type(converted[1]) is getattr(spikeops, kind)
    assert converted[1].tau == 3.0
    assert [r.target for r in report.replaced] == [kind]
    x = torch.randn(4, 2, 8)
    assert torch.equal(converted(x), model(x))
