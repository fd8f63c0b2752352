"""Forward and backward are bit-identical across repeated runs and CPU thread counts, and 1,000
forward+backward iterations leak neither tensors nor resident memory."""
import gc
import os

import pytest
import torch

from .registry import CASES, backend_supports, bit_equal, device_of, run_case

BACKENDS = ["torch", "cpu", "triton", pytest.param("cuda", marks=pytest.mark.cuda)]
# Wide enough that the CPU kernels split the neurons over several threads (2048 neurons a task); the
# interpreted Triton kernels ignore the thread count, so they get a smaller (faster) shape.
SHAPES = {"cpu": (4, 3, 4096), "torch": (4, 3, 4096), "triton": (4, 3, 700), "cuda": (4, 3, 4096)}


def _options(case):
    return case.default_options


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bit_identical_across_runs_and_thread_counts(case, backend, generator):
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    inputs = case.make_inputs(case.work_shapes.get(backend, SHAPES[backend]), torch.float32, "cpu", generator)
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2, 2):
            torch.set_num_threads(count)
            runs.append(run_case(case, backend, inputs, _options(case)))
    finally:
        torch.set_num_threads(threads)
    first = runs[0]
    output = first[case.output_names[0]]
    assert output.any() and not output.all(), "the input must both fire and not fire"
    for label, other in zip(("2 threads", "2 threads again"), runs[1:]):
        for key in first:
            assert bit_equal(other[key], first[key]), f"{key}: {label} differs from 1 thread"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


ITERATIONS = 1000
# A leaked iteration would hold ~10 tensors of 8 KiB (inputs, outputs, saved spikes, gradients):
# 1,000 of them are ~80 MiB, far above the allowance for allocator noise.
RSS_ALLOWANCE = 16 * 2**20
# The fused CPU kernels run 1,000 iterations for every case. The reference and the Triton interpreter
# are 3x and 40x slower per call here, so they run one case each, the interpreter for 100 iterations
# (compiled Triton gets the full 1,000 in the CUDA test below).
LEAK_RUNS = [pytest.param(case, "cpu", ITERATIONS, id=f"{name}-cpu") for name, case in CASES.items()] + [
    pytest.param(CASES["plif"], "torch", ITERATIONS, id="plif-torch"),
    pytest.param(CASES["plif"], "triton", 100, id="plif-triton-interpreted"),
]


@pytest.mark.parametrize("case, backend, iterations", LEAK_RUNS)
def test_no_leak_over_repeated_forward_backward(case, backend, iterations, generator):
    if not backend_supports(case, backend, torch.float32):
        pytest.skip(f"{backend} does not run {case.name}")
    inputs = case.make_inputs(case.work_shapes.get("leak", (4, 512)), torch.float32, device_of(backend), generator)
    options = _options(case)

    def step():
        run_case(case, backend, inputs, options)

    for _ in range(20):  # warm caches: Triton's kernel cache, the allocator's free lists
        step()
    tensors_before, rss_before = _live_tensors(), _resident_bytes()
    samples = []
    for i in range(iterations):
        step()
        if i % (iterations // 10) == iterations // 10 - 1:
            samples.append(_resident_bytes())
    tensors_after, rss_after = _live_tensors(), _resident_bytes()
    assert tensors_after == tensors_before, f"{tensors_after - tensors_before} tensors leaked"
    assert rss_after - rss_before < RSS_ALLOWANCE, f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB"
    # No steady growth: the second half of the run adds no more than allocator noise over the first.
    half = len(samples) // 2
    growth = max(samples[half:]) - max(samples[:half])
    assert growth < RSS_ALLOWANCE // 4, f"RSS still growing: {[s // 2**20 for s in samples]} MiB"


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_no_cuda_allocator_growth(case, backend, generator):
    inputs = case.make_inputs(case.work_shapes.get("leak", (8, 1024)), torch.float32, "cuda", generator)
    for _ in range(20):
        run_case(case, backend, inputs, _options(case))
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    for _ in range(ITERATIONS):
        run_case(case, backend, inputs, _options(case))
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == allocated
