"""Hypothesis profiles and the no-kernel-launch guard of the hardening suite.

Profiles (pick one with HYPOTHESIS_PROFILE=<name>; `make test` uses the default):
- ``spikeops-default``: a few dozen derandomised examples per property, same examples on every run.
- ``long``: the nightly-size run, 2000 examples per property from a seed (pytest --hypothesis-seed=N
  reproduces a run; Hypothesis prints the seed and a reproduction blob on failure).
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch.utils._python_dispatch import TorchDispatchMode

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("spikeops-default", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=_SLOW_OK,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "spikeops-default"))


class KernelLaunched(AssertionError):
    pass


class _RefuseSpikeopsOps(TorchDispatchMode):
    """Any torch.ops.spikeops.* call (C++, CUDA or Triton custom op) fails the test."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "spikeops":
            raise KernelLaunched(f"{func} ran before the input was validated")
        return func(*args, **(kwargs or {}))


def _refuse(*args, **kwargs):
    raise KernelLaunched("a kernel was launched before the input was validated")


@contextlib.contextmanager
def no_kernel_launch(case, monkeypatch):
    """Inside: dispatching a spikeops op, launching any Triton kernel (compiled or interpreted) or
    entering one of the case's own launch points raises KernelLaunched."""
    import triton.runtime.interpreter as interpreter
    import triton.runtime.jit as jit
    monkeypatch.setattr(jit.JITFunction, "run", _refuse)
    monkeypatch.setattr(interpreter.InterpretedFunction, "run", _refuse)
    for owner, attribute in case.launch_points:
        monkeypatch.setattr(owner, attribute, _refuse)
    with _RefuseSpikeopsOps():
        yield


@pytest.fixture
def no_launch(monkeypatch):
    return lambda case: no_kernel_launch(case, monkeypatch)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
