"""Memory layout never changes a result: non-contiguous, transposed, channels_last, expanded (stride 0),
sliced (storage offset) and strided inputs, and stride-0 incoming gradients, give bit-identical outputs
and gradients to the same values stored contiguously. Zero-neuron inputs give empty results; outputs
never share memory with inputs."""
import pytest
import torch

from .layouts import LAYOUTS, expanded_neurons, sliced, transposed
from .registry import CASES, backend_supports, bit_equal, device_of, option_sets, run_case

BACKENDS = ["torch", "cpu", "triton", pytest.param("cuda", marks=pytest.mark.cuda)]

LAYOUT_SHAPES = {"transposed": (3, 4, 5), "sliced": (3, 4, 5), "every_other": (3, 2, 9), "channels_last": (3, 4, 5, 6),
                 "channels_last_3d": (2, 3, 4, 5, 3), "expanded_neurons": (3, 4, 5), "expanded_time": (3, 4, 5)}


def _assert_bit_identical(got, want, context):
    """Fused kernels see the same contiguous buffers whatever the caller's layout, so they agree bit for
    bit. The "torch" reference inherits PyTorch's elementwise kernels, whose vectorised (dense) and
    scalar (strided) paths may differ in the last bit of exp/sigmoid, so it is held to 1 ulp-ish instead."""
    assert set(got) == set(want), context
    for key in want:
        if context.endswith("/torch"):
            torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6, equal_nan=True,
                                       msg=lambda m: f"{context}: {key}: {m}")
        else:
            assert bit_equal(got[key], want[key]), f"{context}: {key} differs from the contiguous run"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUT_SHAPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_input_layout_does_not_change_results(case, layout, backend, generator):
    shape, restride = LAYOUT_SHAPES[layout], LAYOUTS[layout]
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    inputs = case.make_inputs(shape, torch.float32, "cpu", generator)
    strided = dict(inputs)
    for key in case.full_shape_inputs:
        strided[key] = restride(inputs[key])
        assert not strided[key].is_contiguous(), f"{layout} did not produce a non-contiguous {key}"
    dense = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in strided.items()}
    want = run_case(case, backend, dense, case.default_options)
    got = run_case(case, backend, strided, case.default_options)
    _assert_bit_identical(got, want, f"{case.name}/{layout}/{backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_other_inputs_may_be_strided_or_broadcast(case, backend, generator):
    """Every input besides the main one (a neuron's v0, PLIF's w) accepts strided and stride-0 views."""
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    inputs = case.make_inputs((3, 4, 5), torch.float32, "cpu", generator)
    for key, value in inputs.items():
        if key in case.full_shape_inputs or not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        for label, restride in (("transposed", transposed), ("expanded", expanded_neurons), ("sliced", sliced)):
            strided = dict(inputs, **{key: restride(value)})
            dense = dict(inputs, **{key: strided[key].contiguous()})
            _assert_bit_identical(run_case(case, backend, strided, case.default_options),
                                  run_case(case, backend, dense, case.default_options),
                                  f"{case.name}/{key} {label}/{backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stride_zero_incoming_gradient(case, backend, generator):
    """``out.sum().backward()`` hands the backward a stride-0 gradient; it must equal a dense one."""
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    inputs = case.make_inputs((3, 4, 5), torch.float32, "cpu", generator)

    def broadcast(weight):
        return weight.flatten()[:1].reshape([1] * weight.dim()).expand(weight.shape)

    def dense(weight):
        return broadcast(weight).contiguous()

    _assert_bit_identical(run_case(case, backend, inputs, case.default_options, grad_layout=broadcast),
                          run_case(case, backend, inputs, case.default_options, grad_layout=dense),
                          f"{case.name}/{backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_zero_neurons_give_empty_results(case, backend, generator):
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    for shape in case.empty_shapes:
        inputs = case.make_inputs(shape, torch.float32, "cpu", generator)
        result = run_case(case, backend, inputs, case.default_options)
        assert result, f"{shape}: no outputs"
        for key, value in result.items():
            if key in case.state_outputs:  # nothing to learn from: the state stays as it was
                assert torch.equal(value, inputs[case.state_outputs[key]]), f"{shape}: {key} changed"
            elif key.startswith("grad_"):
                source = inputs[key[len("grad_"):]]
                assert value.shape == source.shape, f"{shape}: {key} has shape {tuple(value.shape)}"
                if source.numel():  # a parameter shared by all (zero) neurons gets a zero gradient
                    assert torch.count_nonzero(value) == 0, f"{shape}: {key} = {value}"
            else:
                assert value.numel() == 0, f"{shape}: {key} is not empty: {tuple(value.shape)}"


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_empty_inputs_that_have_no_meaning_are_refused(case, backend, generator):
    """The one exception to "empty in, empty out": a neuron sequence with T = 0 steps has no final
    membrane to return, so it is an error (the foundation issue's decision)."""
    for shape, message in case.invalid_empty_shapes:
        inputs = case.make_inputs(shape, torch.float32, "cpu", generator)
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("*", r"\*")):
            case.call(backend, **inputs, **case.default_options)


def _storages(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor) and t.numel()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_outputs_never_alias_inputs(case, dtype, backend, generator):
    if not backend_supports(case, backend, dtype):
        pytest.skip(f"{backend} does not run {case.name} in {dtype}")
    for shape in ((1, 5), (3, 2, 4)):
        inputs = case.make_inputs(shape, dtype, device_of(backend), generator)
        for options in option_sets(case):
            outputs = [o for o in case.call(backend, **inputs, **options) if o is not None]
            shared = _storages(outputs) & _storages(inputs.values())
            assert not shared, f"{case.name}/{backend}/{shape}: an output shares memory with an input"
            assert len(_storages(outputs)) == len([o for o in outputs if o.numel()]), "two outputs share memory"
