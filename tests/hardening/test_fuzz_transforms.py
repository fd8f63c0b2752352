"""The fuzz profile extended (issue 18) for the attention operators (spike gate: Q-K token / channel attention
and SDSA; SSA; bipolar attention; the experts mixture): Hypothesis draws the operator, its options, a shape and a
fused backend, and checks

* double backward: second derivatives (a gradient differentiated again) equal the reference's;
* dynamic shapes under torch.compile: one graph (mark_dynamic on batch and tokens) serves a drawn sequence of
  sizes, equal to eager;
* thread counts: the CPU kernels give bit-identical outputs and gradients with 1, 2 and 3 threads.

Same profiles as tests/hardening/test_fuzz.py (``HYPOTHESIS_PROFILE=long`` for the nightly size).
"""
import pytest
import torch
import torch._dynamo.testing
from hypothesis import given, note, settings
from hypothesis import strategies as st

import spikeops

from .registry import CASES, backend_supports, bit_equal, run_case

ATTENTION = [name for name in ("qk_token_attention", "qk_channel_attention", "spike_driven_attention",
                               "spiking_self_attention", "bipolar_attention", "experts_mixture") if name in CASES]
FUZZ_BACKENDS = [b for b in ("cpu", "triton") if b != "cpu" or spikeops.backends.extension_available()]


def _second_derivatives(case, backend, inputs, options, dtype):
    """Gradient of w . outputs w.r.t. every grad input (create_graph), then the gradient of w2 . that gradient
    w.r.t. every grad input: {"grad_<x>": ..., "hess_<x>": ...}."""
    args = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(dtype).detach().requires_grad_(key in case.grad_inputs)
        args[key] = value
    outputs = case.call(backend, **args, **options)
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum()
               for o in outputs if o is not None and o.requires_grad)
    leaves = [args[k] for k in case.grad_inputs if k in args]
    if not isinstance(loss, torch.Tensor):
        return {}
    grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    second = sum((gr * torch.randn(gr.shape, generator=g, dtype=torch.float64).to(gr.dtype)).sum()
                 for gr in grads if gr is not None and gr.requires_grad)
    hess = torch.autograd.grad(second, leaves, allow_unused=True) if isinstance(second, torch.Tensor) else [None] * len(leaves)
    result = {}
    for name, leaf, gr, h in zip([k for k in case.grad_inputs if k in args], leaves, grads, hess):
        result["grad_" + name] = torch.zeros_like(leaf) if gr is None else gr.detach()
        result["hess_" + name] = torch.zeros_like(leaf) if h is None else h.detach()
    return result


@st.composite
def double_backward_calls(draw):
    case = CASES[draw(st.sampled_from(ATTENTION), label="op")]
    backend = draw(st.sampled_from([b for b in FUZZ_BACKENDS if backend_supports(case, b, torch.float32)]),
                   label="backend")
    return case, backend, draw(case.shapes, label="shape"), draw(case.options, label="options"), \
        draw(st.integers(0, 2**31 - 1), label="seed")


@settings(max_examples=min(settings.default.max_examples, 20))
@given(double_backward_calls())
def test_double_backward_matches_the_reference(call):
    case, backend, shape, options, seed = call
    dtype = torch.float32 if backend == "triton" else torch.float64
    inputs = case.make_inputs(shape, torch.float64, "cpu", torch.Generator().manual_seed(seed))
    note(f"{case.name} on {backend}, shape {shape}, options {options}")
    want = _second_derivatives(case, "torch", inputs, options, torch.float64)
    got = _second_derivatives(case, backend, inputs, options, dtype)
    assert set(got) == set(want)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-9, rtol=1e-9)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], equal_nan=True, **tol, msg=lambda m: f"{key}: {m}")


SPIKE_GATE = [name for name in ATTENTION[:3]]
_sizes = st.lists(st.tuples(st.integers(2, 4), st.integers(2, 9)), min_size=2, max_size=3, unique=True)


@settings(max_examples=min(settings.default.max_examples, 6))
@given(st.sampled_from(SPIKE_GATE), st.sampled_from(FUZZ_BACKENDS), _sizes, st.integers(0, 2**31 - 1))
def test_dynamic_shapes_under_compile(name, backend, sizes, seed):
    """Batch and token counts vary over one compiled graph (Dynamo with mark_dynamic, fullgraph)."""
    case = CASES[name]
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()

    def fn(**inputs):
        return case.call(backend, **inputs, **case.default_options)[0]
    compiled = torch.compile(fn, fullgraph=True, backend=counter)
    for i, (B, N) in enumerate(sizes):
        inputs = case.make_inputs((2, B, 4, N), torch.float32, "cpu", torch.Generator().manual_seed(seed + i))
        for key in case.full_shape_inputs:
            torch._dynamo.mark_dynamic(inputs[key], 1)
            torch._dynamo.mark_dynamic(inputs[key], 3)
        torch.testing.assert_close(compiled(**inputs), fn(**inputs))
    assert counter.frame_count == 1


@st.composite
def thread_calls(draw):
    case = CASES[draw(st.sampled_from(ATTENTION), label="op")]
    shape = draw(case.shapes, label="shape")
    return case, shape, draw(case.options, label="options"), draw(st.integers(0, 2**31 - 1), label="seed")


@pytest.mark.skipif(not spikeops.backends.extension_available(), reason="spikeops._C not built")
@given(thread_calls())
def test_cpu_results_do_not_depend_on_the_thread_count(call):
    case, shape, options, seed = call
    # Scale the drawn shape up so that the kernels split their work over several threads.
    shape = (*shape[:-1], shape[-1] * 40) if shape else shape
    inputs = case.make_inputs(shape, torch.float32, "cpu", torch.Generator().manual_seed(seed))
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            runs.append(run_case(case, "cpu", inputs, options))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for key, value in runs[0].items():
            assert bit_equal(other[key], value), f"{case.name} {key}: thread count changes the result"


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
