"""NaN and Inf: defined behaviour, identical on every backend.

Neurons: a NaN membrane never spikes and stays NaN (every comparison with NaN is false, and the reset
keeps NaN). Infinities follow IEEE arithmetic of the charge/fire/reset equations, so every backend
gives the same answer: +Inf input fires, -Inf never fires, and the next charge of an infinite
membrane (or a hard reset of one, v_reset*1 + 0*Inf) is NaN, which then never spikes again.

Attention, bipolar attention, experts mixture: the same neuron rules for their attention neurons, and
IEEE arithmetic for the sums and products around them (0 * NaN = NaN: a silent attention neuron
does not hide a NaN gate input; a NaN in a reduced input makes that neuron's sum NaN, so it never
fires). Forward outputs are identical on every backend; gradients are identical for NaN inputs and
not specified for Inf inputs (see ``test_non_finite_inputs_match_the_reference``). Bipolar attention
refuses non-ternary q/k (NaN and Inf included), so only its v is poisoned here.
"""
import pytest
import torch

from .registry import CASES, assert_matches, backend_supports, run_case

BACKENDS = ["cpu", "triton", pytest.param("cuda", marks=pytest.mark.cuda)]
NAN, INF = float("nan"), float("inf")


INF_AND_NAN = (NAN, NAN, INF, -INF, INF, -INF)
# Neurons whose dH/dV grows with V (QIF, EIF): an infinite membrane makes dH/dV infinite, and where it meets a
# zero factor autograd and the kernels disagree (NaN against +-Inf), so under Inf only their forward is
# specified, as for the ops with internal membranes below; NaN inputs give the same NaN gradients everywhere.
V_DEPENDENT_CHARGE = ("qif", "eif")
NAN_ONLY = (NAN,) * 6


def _poison(inputs, generator, names=None, pattern=INF_AND_NAN):
    """``pattern`` at a few places of every floating input (of ``names`` when given; fixed places)."""
    poisoned = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.numel() > 4 and (names is None or key in names):
            flat = value.clone().flatten()
            where = torch.randperm(flat.numel(), generator=generator)[:len(pattern)]
            flat[where] = torch.tensor(pattern, dtype=flat.dtype)
            value = flat.view(value.shape)
        poisoned[key] = value
    return poisoned


VARIANTS = [(case, variant) for case in CASES.values() for variant in case.variants]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("case, variant", VARIANTS, ids=[f"{c.name}-{v}" for c, v in VARIANTS])
def test_non_finite_inputs_match_the_reference(case, variant, dtype, backend, generator):
    if not backend_supports(case, backend, dtype):
        pytest.skip(f"{backend} does not run {case.name} in {dtype}")
    clean = case.make_inputs((5, 4, 7), dtype, "cpu", generator)
    inputs = _poison(clean, generator, case.nonfinite_inputs)
    options = dict(case.default_options, **case.variants[variant])
    want = run_case(case, "torch", inputs, options)
    if "v_seq" in case.output_names:  # a stateless op may map NaN to a 0 spike with a 0 gradient
        assert any(v.isnan().any() for v in want.values()), "the poisoned input must reach the outputs"
    got = run_case(case, backend, inputs, options)
    context = f"{case.name}/{backend}/{variant}"
    if "v_seq" in case.output_names and case.name not in V_DEPENDENT_CHARGE:
        # A neuron returns every membrane, so every gradient path is an output's: all agree, NaN for NaN.
        assert_matches(case, got, want, dtype, context)
        return
    assert_matches(case, _forward(got), _forward(want), dtype, context)
    # Gradients under Inf are not specified for ops whose membranes are internal: an infinite membrane or
    # upstream gradient meets a zero factor (the last step's membrane gradient, 1 - S, a saturated
    # surrogate), which the fused kernels multiply (NaN) and autograd skips or sums term by term (finite,
    # or -Inf + Inf = NaN where a kernel keeps -Inf). NaN inputs give the same NaN gradients everywhere.
    inputs = _poison(clean, generator, case.nonfinite_inputs, NAN_ONLY)
    got, want = (_without(run_case(case, b, inputs, options), case.nan_gradient_exceptions) for b in (backend, "torch"))
    assert_matches(case, got, want, dtype, context + "/NaN only")


def _without(result, keys):
    return {k: v for k, v in result.items() if k not in keys}


def _forward(result):
    return {k: v for k, v in result.items() if not k.startswith("grad_")}


# Stateful neurons (their v_seq shows the membrane); binary ones also get the Inf checks.
NEURON_VARIANTS = [(c, v) for c, v in VARIANTS if "v_seq" in c.output_names and c.per_neuron_input]
BINARY_VARIANTS = [(c, v) for c, v in NEURON_VARIANTS if c.binary_spikes]


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("case, variant", NEURON_VARIANTS, ids=[f"{c.name}-{v}" for c, v in NEURON_VARIANTS])
def test_a_nan_membrane_never_spikes_and_stays_nan(case, variant, backend, generator):
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    T, N = 6, 8
    inputs = case.make_inputs((T, N), torch.float32, "cpu", generator)
    inputs["x"] = inputs["x"].abs() + 4.0  # every healthy neuron fires every step
    inputs["x"][2, 1] = NAN                 # neuron 1 turns NaN at t = 2
    inputs["v0"][3] = NAN                   # neuron 3 starts NaN
    out = run_case(case, backend, inputs, dict(case.default_options, **case.variants[variant], store_v_seq=True))
    spikes, v_seq, v_last = out["spikes"], out["v_seq"], out["v_last"]
    assert spikes[:2, 1].ne(0).all() and spikes[2:, 1].eq(0).all(), spikes[:, 1]
    assert v_seq[2:, 1].isnan().all() and v_last[1].isnan()
    assert spikes[:, 3].eq(0).all() and v_seq[:, 3].isnan().all() and v_last[3].isnan()
    healthy = [i for i in range(N) if i not in (1, 3)]
    assert spikes[:, healthy].ne(0).all() and not v_seq[:, healthy].isnan().any()


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("case, variant", BINARY_VARIANTS, ids=[f"{c.name}-{v}" for c, v in BINARY_VARIANTS])
def test_infinite_input_fires_and_negative_infinity_never_does(case, variant, backend, generator):
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    inputs = case.make_inputs((3, 2), torch.float32, "cpu", generator)
    inputs["x"] = torch.tensor([[INF, -INF], [0.0, 0.0], [0.0, 0.0]])
    inputs["v0"] = torch.zeros(2)
    out = run_case(case, backend, inputs, dict(case.default_options, **case.variants[variant], store_v_seq=True))
    assert out["spikes"][0].tolist() == [1.0, 0.0]
    assert out["spikes"][:, 1].eq(0).all()
    # The membrane after an infinite charge is never a finite number: IEEE gives Inf or NaN.
    assert not out["v_seq"][:, 0].isfinite().any() and not out["v_seq"][:, 1].isfinite().any()


# Where a NaN at step 1 lands in each attention op ([T, B, C, N] = [4, 1, 4, 6], two heads of d = 2), and
# the outputs it must silence from then on: the attention neurons whose sum it enters.
NAN_IN_SUM = {
    "qk_token_attention": ("q", (slice(1, None), 0, slice(0, 2), 3)),      # neuron (head 0, token 3)
    "qk_channel_attention": ("q", (slice(1, None), 0, 0, slice(None))),    # neuron (channel 0)
    "spike_driven_attention": ("k", (slice(1, None), 0, 0, slice(None))),  # code form: sum_n K*V, channel 0
    "spiking_self_attention": ("q", (slice(1, None), 0, slice(0, 2), 3)),  # row (head 0, token 3) of Q K^T V
}


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("name", NAN_IN_SUM)
def test_a_nan_in_a_summed_input_silences_that_attention_neuron_for_good(name, backend, generator):
    case = CASES[name]
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {name}")
    inputs = case.make_inputs((4, 1, 4, 6), torch.float32, "cpu", generator)
    for key in case.full_shape_inputs:  # every attention neuron sums >= 2 and fires at every step
        inputs[key] = torch.full_like(inputs[key], 2.0 if name != "spiking_self_attention" else 1.0)
    poisoned, silenced = NAN_IN_SUM[name]
    inputs[poisoned][1, 0, 0, 3] = NAN
    out = run_case(case, backend, inputs, case.default_options, backward=False)["spikes"]
    expected = torch.ones_like(out) * (1.0 if name == "spiking_self_attention" else 2.0)
    expected[silenced] = 0.0
    assert torch.equal(out, expected), out
