"""Test fixtures. The interpreter switch and the `cuda` marker live in the repository's root conftest.py,
shared with benchmarks/."""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


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
