"""Bad input is refused before any kernel launch, with a message naming the argument, the expectation
and the offending value, on every backend (and "auto")."""
import re

import pytest
import torch

import spikeops

from .registry import CASES

BAD_CALLS = [pytest.param(case, bad, id=bad.label) for case in CASES.values() for bad in case.bad_calls]


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "auto"])
@pytest.mark.parametrize("case, bad", BAD_CALLS)
def test_bad_input_is_refused_before_launch(no_launch, case, bad, backend):
    with no_launch(case), pytest.raises(bad.error) as raised:
        bad.call(backend)
    message = str(raised.value)
    assert re.search(rf"(?<![\w]){re.escape(bad.argument)}(?![\w])", message), f"argument {bad.argument!r} not named: {message}"
    assert bad.expectation in message, f"expectation {bad.expectation!r} not stated: {message}"
    assert bad.value in message, f"value {bad.value!r} not shown: {message}"


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_the_guard_sees_a_real_launch(no_launch, case, backend):
    """The no-launch guard must fail a valid call, or the test above proves nothing."""
    inputs = case.make_inputs((2, 3), torch.float32, "cpu", torch.Generator().manual_seed(0))
    with no_launch(case), pytest.raises(AssertionError, match="validated"):
        case.call(backend, **inputs, **case.default_options)


@pytest.mark.parametrize("make, argument, value", [
    (lambda: spikeops.LIF(tau=0.5), "tau", "0.5"),
    (lambda: spikeops.LIF(v_threshold=float("nan")), "v_threshold", "nan"),
    (lambda: spikeops.LIF(step_mode="x"), "step_mode", "'x'"),
    (lambda: spikeops.PLIF(init_tau=1.0), "init_tau", "1.0"),
    (lambda: spikeops.PLIF(init_tau=True), "init_tau", "True"),
    (lambda: spikeops.IF(v_reset=float("nan")), "v_reset", "nan"),
    (lambda: spikeops.IF(surrogate_function="Tanh"), "surrogate_function", "'Tanh'"),
    (lambda: spikeops.TokenQKAttention(16, num_heads=3), "num_heads", "num_heads=3"),
    (lambda: spikeops.ChannelQKAttention(16, num_heads=0), "num_heads", "0"),
    (lambda: spikeops.SpikingSelfAttention(16, scale=float("nan")), "scale", "nan"),
    (lambda: spikeops.SpikeDrivenSelfAttention(16, form="both"), "form", "'both'"),
    (lambda: spikeops.BipolarSelfAttention(16, norm="max"), "norm", "'max'"),
    (lambda: spikeops.BipolarSelfAttention(16, scale="1"), "scale", "'1'"),
    (lambda: spikeops.BipolarSelfAttention(16, attention_threshold=float("inf")), "attention_threshold", "inf"),
    (lambda: spikeops.EMSA(16, num_experts=0), "num_experts", "0"),
    (lambda: spikeops.EMSA(16, expert_dim=True), "expert_dim", "True"),
    (lambda: spikeops.EMSA(16, scale=float("inf")), "scale", "inf"),
    (lambda: spikeops.EMSP(16, hidden_dim=7), "hidden_dim", "7"),
])
def test_bad_module_arguments_fail_at_construction(make, argument, value):
    with pytest.raises(ValueError) as raised:
        make()
    assert argument in str(raised.value) and value in str(raised.value), str(raised.value)


@pytest.mark.parametrize("cls", [spikeops.LIF, spikeops.IF, spikeops.PLIF])
def test_module_forward_refuses_bad_input_before_launch(no_launch, cls):
    module = cls(step_mode="m", backend="cpu")
    with no_launch(CASES["lif"]), pytest.raises(TypeError, match=r"x: expected a floating dtype .* got torch.int64"):
        module(torch.ones(3, 4, dtype=torch.int64))
    module.backend = "cupy"  # modules resolve the backend per call, so it may be switched between calls
    with no_launch(CASES["lif"]), pytest.raises(ValueError, match=r"backend: expected one of .* got 'cupy'"):
        module(torch.ones(3, 4))


@pytest.mark.parametrize("cls", [spikeops.TokenQKAttention, spikeops.ChannelQKAttention, spikeops.SpikingSelfAttention,
                                 spikeops.SpikeDrivenSelfAttention, spikeops.BipolarSelfAttention, spikeops.EMSA,
                                 spikeops.EMSP])
def test_attention_block_refuses_a_bad_input_before_launch(no_launch, cls):
    block = cls(16, backend="cpu") if cls is spikeops.EMSP else cls(16, backend="cpu", **(
        dict(num_experts=2, expert_dim=4) if cls is spikeops.EMSA else dict(num_heads=2)))
    for x, shown in ((torch.ones(2, 1, 8, 2, 2), "(2, 1, 8, 2, 2)"), (torch.ones(2, 16, 4), "(2, 16, 4)")):
        with no_launch(CASES["lif"]), pytest.raises(ValueError) as raised:
            block(x)
        assert "x: expected" in str(raised.value) and "C=16" in str(raised.value) and shown in str(raised.value)
