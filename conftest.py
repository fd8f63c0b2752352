"""Harness shared by tests/ and benchmarks/: Triton runs under its interpreter on CPU tensors when no GPU
is present, and items marked `cuda` run wherever CUDA is available (reported as skipped, never as passed,
elsewhere)."""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; runs automatically wherever one is present")
    config.addinivalue_line("markers", "slow: long-running; left out of the default runs")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
