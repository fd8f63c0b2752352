"""Installing like a library: the metadata (pyproject.toml), the sdist carrying every source file whatever the
machine making it, setup.py's one CUDA toolkit and its CPU-only fallback, the build record
(spikeops/_build_info.py) and what spikeops does with it at import and at the first CUDA call (mocked: no GPU here).
The installs themselves (sdist into a fresh venv) are measured by hand; see README "Installing as a library"."""
import os
import subprocess
import sys
import tarfile
import tomllib
import types
import warnings
from pathlib import Path

import pytest
import torch

import spikeops
from spikeops import backends

REPO = Path(__file__).resolve().parent.parent


def test_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["version"] == spikeops.__version__
    assert project["requires-python"] == ">=3.11"  # SpikingJelly 2.0 needs 3.11
    assert project["readme"] == "README.md" and (REPO / "LICENSE").read_text().startswith("MIT License")
    assert not any(dep.startswith("numpy") for dep in project["dependencies"]), "numpy is not used by spikeops"
    assert any(dep.startswith("torch") for dep in project["dependencies"])
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import build_backend
    finally:
        sys.path.pop(0)
    assert "torch>=2.11" in build_backend.COMPILE_REQUIRES


def test_numpy_is_not_imported_by_the_package():
    offenders = [str(p.relative_to(REPO)) for folder in ("spikeops", "kernels") for p in (REPO / folder).rglob("*.py")
                 if "import numpy" in p.read_text() or "from numpy" in p.read_text()]
    assert not offenders


def test_sdist_carries_every_source_file(tmp_path):
    env = dict(os.environ, CUDA_HOME="/nonexistent")  # as if made on a machine without nvcc
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True)
    (archive,) = tmp_path.glob("spikeops-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {str(p.relative_to(REPO)) for p in (REPO / "csrc").rglob("*") if p.suffix in (".h", ".cpp", ".cu")}
    wanted |= {str(p.relative_to(REPO)) for p in (REPO / "kernels").glob("*.py")}
    wanted |= {"setup.py", "pyproject.toml", "LICENSE", "README.md", "tools/build_backend.py"}
    assert wanted <= names, f"missing from the sdist: {sorted(wanted - names)}"
    assert not any(n.endswith((".so", ".o")) or n.endswith("_build_info.py") for n in names)


def _setup_py(*args, **env):
    return subprocess.run([sys.executable, "setup.py", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_a_broken_cuda_home_builds_cpu_only_and_says_why():
    out = _setup_py("--version", CUDA_HOME="/nonexistent")
    assert out.returncode == 0, out.stderr
    assert "CPU kernels only" in out.stderr and "CUDA_HOME=/nonexistent" in out.stderr
    out = _setup_py("--version", CUDA_HOME="/nonexistent", SPIKEOPS_REQUIRE_CUDA="1")
    assert out.returncode != 0 and "SPIKEOPS_REQUIRE_CUDA=1" in out.stderr
    out = _setup_py("--version", SPIKEOPS_NO_EXTENSION="1")
    assert out.returncode == 0 and "pure Python" in out.stderr


def test_build_mismatch_detection():
    info = types.SimpleNamespace(TORCH_VERSION="2.14.1+cu130", TORCH_CUDA_VERSION="13.0", WITH_CUDA=True)
    assert backends.build_mismatch(info, "2.14.1", "13.0") is None  # local tags may differ
    assert "torch 2.13.0" in backends.build_mismatch(info, "2.13.0+cpu", None)
    assert "CPU build" in backends.build_mismatch(info, "2.14.1+cpu", None)
    assert "CUDA 12.8" in backends.build_mismatch(info, "2.14.1+cu128", "12.8")
    cpu_only = types.SimpleNamespace(TORCH_VERSION="2.14.1+cu130", TORCH_CUDA_VERSION="13.0", WITH_CUDA=False)
    assert backends.build_mismatch(cpu_only, "2.14.1+cpu", None) is None
    assert backends.build_mismatch(types.SimpleNamespace(), "2.14.1", None) is None


def test_rebuild_command_follows_the_install():
    assert "make build" in backends.rebuild_command("checkout")
    installed = backends.rebuild_command("installed", cuda_arch="7.5")
    assert "pip install --no-build-isolation" in installed and 'TORCH_CUDA_ARCH_LIST="7.5"' in installed
    assert backends._install_kind() == "checkout"  # these tests run from the source tree


def _run_with_build_info(fields: dict, code: str):
    """Imports spikeops in a fresh interpreter with a made-up spikeops._build_info."""
    setup = ("import sys, types, warnings; warnings.simplefilter('always'); "
             "m = types.ModuleType('spikeops._build_info'); m.__dict__.update(" + repr(fields) + "); "
             "sys.modules['spikeops._build_info'] = m\n")
    return subprocess.run([sys.executable, "-c", setup + code], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_an_extension_built_for_another_torch_is_not_loaded_and_says_how_to_rebuild():
    out = _run_with_build_info(
        {"EXTENSION": True, "TORCH_VERSION": "2.11.0+cu128", "TORCH_CUDA_VERSION": "12.8", "WITH_CUDA": True},
        "import spikeops, torch\n"
        "assert not spikeops.backends.extension_available()\n"
        "print(spikeops.backends.resolve('auto', torch.device('cpu')))\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch"
    assert out.stderr.count("RuntimeWarning") == 1, out.stderr
    assert "built against torch 2.11.0+cu128" in out.stderr and "make build" in out.stderr


def test_a_pure_python_install_falls_back_with_one_warning():
    out = _run_with_build_info(
        {"EXTENSION": False},
        "import spikeops, torch\n"
        "print(spikeops.backends.resolve('auto', torch.device('cpu')))\n"
        "print(spikeops.backends.resolve('auto', torch.device('cpu')))\n"
        "try:\n    spikeops.backends.resolve('cpu', torch.device('cpu'))\nexcept RuntimeError as e:\n    print(e)\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["torch", "torch"] and "SPIKEOPS_NO_EXTENSION=1" in lines[2]
    assert out.stderr.count("RuntimeWarning") == 1


@pytest.mark.parametrize("archs, capability, runs", [
    ("8.0;9.0+PTX", (8, 0), True), ("8.0;9.0+PTX", (8, 6), True), ("8.0;9.0+PTX", (8, 9), True),
    ("8.0;9.0+PTX", (9, 0), True), ("8.0;9.0+PTX", (10, 0), True), ("8.0;9.0+PTX", (12, 0), True),
    ("8.0;9.0+PTX", (7, 5), False), ("8.0;9.0", (10, 0), False), ("8.0;9.0", (12, 0), False),
    ("9.0a", (9, 0), True), ("8.6", (8, 0), False), ("7.5 8.0", (7, 5), True),
])
def test_which_gpus_a_build_runs_on(archs, capability, runs):
    assert backends.arch_runs(archs, capability) is runs


class _FakeC:
    @staticmethod
    def cuda_compiled():
        return True


@pytest.fixture
def gpu_of_capability(monkeypatch):
    def make(capability, archs="8.0;9.0+PTX"):
        monkeypatch.setattr(backends, "_C", _FakeC())
        monkeypatch.setattr(backends, "_build_info", types.SimpleNamespace(CUDA_ARCHS=archs))
        monkeypatch.setattr(backends, "_device_capability", lambda index: capability)
        backends._arch_problem_for.cache_clear()
        backends._warn_arch_fallback.cache_clear()
    yield make
    backends._arch_problem_for.cache_clear()
    backends._warn_arch_fallback.cache_clear()


def test_a_gpu_the_build_does_not_cover_makes_auto_fall_back_and_cuda_raise(gpu_of_capability):
    gpu_of_capability((7, 5))
    device = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match=r"compute capability 7\.5"):
        assert backends.resolve("auto", device) in ("triton", "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        backends.resolve("auto", device)
    with pytest.raises(RuntimeError, match=r"compute capability 7\.5 .*8\.0;9\.0\+PTX.*TORCH_CUDA_ARCH_LIST=\"7\.5\""):
        backends.resolve("cuda", device)
    assert "cuda" not in backends.available_backends(device)


def test_a_covered_gpu_uses_the_cuda_kernels(gpu_of_capability):
    gpu_of_capability((12, 0))  # Blackwell: runs the sm_90 PTX
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("auto", torch.device("cuda", 0)) == "cuda"
        assert backends.resolve("cuda", torch.device("cuda", 0)) == "cuda"
