"""Test harness: Triton runs under its interpreter on CPU tensors when no GPU is present, and tests
marked `cuda` run wherever CUDA is available (they are reported as skipped, never as passed, here)."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; runs automatically wherever one is present")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Where each fused backend runs in this test session.
BACKEND_DEVICE = {"cpu": "cpu", "triton": "cuda" if HAS_CUDA else "cpu", "cuda": "cuda"}
FUSED_BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("triton", id="triton"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
