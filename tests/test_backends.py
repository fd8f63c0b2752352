"""Backend choice: 'auto' picks the fused path for the device, a missing extension degrades with one
warning instead of failing, and an unavailable backend says why."""
import warnings

import pytest
import torch

import spikeops
from spikeops import backends


def test_auto_on_cpu_is_the_fused_cpu_path():
    if backends.extension_available():
        assert backends.resolve("auto", torch.device("cpu")) == "cpu"


def test_missing_extension_falls_back_to_reference_with_a_warning(monkeypatch):
    monkeypatch.setattr(backends, "_C", None)
    monkeypatch.setattr(backends, "_EXTENSION_ERROR", ImportError("simulated"))
    backends._warn_no_extension.cache_clear()
    with pytest.warns(RuntimeWarning, match="simulated"):
        assert backends.resolve("auto", torch.device("cpu")) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only one warning per process
        assert backends.resolve("auto", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="backend='cpu' is unavailable: .*simulated.*make build"):
        backends.resolve("cpu", torch.device("cpu"))
    x = torch.randn(3, 5) + 1
    spikes, _, _ = spikeops.functional.lif(x)
    assert torch.equal(spikes, spikeops.functional.lif(x, backend="torch")[0])
    backends._warn_no_extension.cache_clear()


def test_triton_on_cpu_requires_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in backends.why_unavailable("triton", torch.device("cpu"))


def test_available_backends_lists_only_runnable_ones():
    names = spikeops.available_backends("cpu")
    assert "torch" in names and "cuda" not in names
    assert ("cpu" in names) == backends.extension_available()
