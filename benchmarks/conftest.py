"""Shared harness for every benchmarks/bench_<op>.py (pytest-benchmark).

Conventions that benchmarks/report.py relies on:
- each test is parametrised by `backend`: a spikeops backend ("torch" reference, "cpu", "cuda",
  "triton") or a peer (any other name, e.g. "plain-loop", "torch.compile", "sj-multistep");
- `benchmark.group` is "<op> <shape> <dtype> <device> fwd" or "... fwd+bwd";
- `run_case` (below) warms up, measures memory once outside the timed rounds, records the
  neuron-steps for throughput and then times the call. Use it instead of calling `benchmark` directly.

Memory is measured, not estimated:
- saved-for-backward bytes: every tensor autograd saves passes through
  `torch.autograd.graph.saved_tensors_hooks` (`spikeops.ops.spike_pack.SavedTensorsCounter`, which
  composes with spike packing: packed spikes count at their packed size); storages are counted once each;
- peak: on CUDA, `torch.cuda.max_memory_allocated` above the level before the call; on CPU (torch
  keeps no allocator statistics there), glibc's in-use heap (`mallinfo2`: arena + mmapped bytes,
  which every torch CPU allocation goes through) sampled at every ATen op boundary through a
  TorchDispatchMode and every 0.2 ms from a thread, above the level before the call. That catches
  every tensor alive between ops, and most scratch that lives inside one long op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading

import torch

HAS_CUDA = torch.cuda.is_available()  # the root conftest.py has set TRITON_INTERPRET when this is False

import pytest  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from spikeops import backends  # noqa: E402
from spikeops.ops.spike_pack import SavedTensorsCounter  # noqa: E402

SPIKEOPS_BACKENDS = ("torch", "cpu", "cuda", "triton")
# The devices a benchmark group can run on here; a group holds one device only.
DEVICES = ("cpu", "cuda") if HAS_CUDA else ("cpu",)


def skip_reason(backend: str, device: str) -> str | None:
    """Why a spikeops `backend` is not benchmarked on `device`, or None when it is."""
    if backend not in SPIKEOPS_BACKENDS:
        return None if device in DEVICES else f"no {device} device here"
    if device == "cuda" and not HAS_CUDA:
        return "no CUDA GPU on this machine"
    if backend == "cpu" and device != "cpu":
        return "the fused C++ 'cpu' backend takes CPU tensors"
    if backend == "cuda" and device != "cuda":
        return "the 'cuda' backend needs a CUDA GPU"
    if backend == "triton" and device != "cuda":
        return "Triton on CPU runs only under TRITON_INTERPRET, an interpreter that is not a speed measurement"
    return backends.why_unavailable(backend, torch.device(device))


def require(backend: str, device: str) -> None:
    """pytest.skip with the reason when `backend` cannot be benchmarked on `device`."""
    reason = skip_reason(backend, device)
    if reason is not None:
        pytest.skip(f"{backend} on {device}: {reason}")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- memory
class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None
    return libc.mallinfo2


_MALLINFO2 = _load_mallinfo2()


def heap_in_use() -> int | None:
    """Bytes the C heap has handed out and not taken back (small blocks + mmapped blocks)."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return info.uordblks + info.hblkhd


class _HeapPeak(TorchDispatchMode):
    """Peak of the in-use C heap while active: sampled after every ATen op that passes the
    dispatcher (exact at op boundaries) and, from a background thread every 0.2 ms, during long
    ops, which run with the GIL released (fused kernels' scratch, Inductor-generated code that
    allocates without going through the dispatcher)."""

    def __init__(self, op_level: bool):
        super().__init__()
        self.op_level = op_level
        self.peak = heap_in_use()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def sample(self):
        self.peak = max(self.peak, heap_in_use())

    def _poll(self):
        while not self._stop.wait(0.0002):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return super().__enter__() if self.op_level else self

    def __exit__(self, *exc):
        if self.op_level:
            super().__exit__(*exc)
        self._stop.set()
        self._thread.join()
        self.sample()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sample()
        return out


def _storage_key(t: torch.Tensor):
    storage = t.untyped_storage()
    return t.device, storage.data_ptr(), storage.nbytes()


def measure_memory(fn, device: str, inputs=(), op_level: bool = True) -> dict:
    """Saved-for-backward and peak bytes of one call of `fn`.

    `inputs`: tensors the caller holds anyway; what autograd saves of them is reported apart
    (`saved_input_bytes`), since it costs no extra memory. `op_level=False` leaves out the
    dispatch-mode sampling (torch.compile'd code must not run under a dispatch mode); the thread
    still samples, so that peak may miss short spikes between samples.
    """
    input_keys = {_storage_key(t) for t in inputs if isinstance(t, torch.Tensor)}
    gc.collect()
    synchronize(device)
    result = {}
    # The spike-packing hooks count too: a model that keeps its spikes as bits is measured as it trains.
    with SavedTensorsCounter() as counter:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            synchronize(device)
            result["peak_bytes"] = torch.cuda.max_memory_allocated() - base
            result["peak_method"] = "torch.cuda.max_memory_allocated"
        elif heap_in_use() is not None:
            base = heap_in_use()
            with _HeapPeak(op_level) as tracker:
                out = fn()  # held until the last sample: outputs count towards the peak
                tracker.sample()
            del out
            result["peak_bytes"] = tracker.peak - base
            result["peak_method"] = ("glibc heap in use, sampled " + ("at every ATen op and " if op_level else "")
                                     + "every 0.2 ms")
        else:
            fn()
            result["peak_bytes"] = None
            result["peak_method"] = "unavailable (no glibc mallinfo2)"
    saved = counter.saved  # storage key (as _storage_key) or ("packed", id) -> bytes
    result["saved_bytes"] = sum(nbytes for key, nbytes in saved.items() if key not in input_keys)
    result["saved_input_bytes"] = sum(nbytes for key, nbytes in saved.items() if key in input_keys)
    return result


# ---------------------------------------------------------------- the one entry point for bench files
def run_case(benchmark, fn, *, group: str, device: str, neuron_steps: int | None = None, inputs=(),
             memory: bool = True, op_level_memory: bool = True, warmup: int = 1, **extra_info):
    """Warm up, measure memory once, then time `fn` with pytest-benchmark.

    neuron_steps: T * neurons processed per call, for the throughput column (None for ops where it
    means nothing). extra_info: anything the report should see (T, neurons, op, pass_, sweep, ...).
    """
    benchmark.group = group

    def call():
        fn()
        synchronize(device)

    for _ in range(warmup):
        call()
    info = dict(extra_info, device=device)
    if neuron_steps is not None:
        info["neuron_steps"] = int(neuron_steps)
    if memory:
        info.update(measure_memory(fn, device, inputs=inputs, op_level=op_level_memory))
    benchmark.extra_info.update(info)
    return benchmark(call)
