"""Builds spikeops._C: the fused CPU kernels always, the CUDA kernels whenever torch is a CUDA build
and nvcc is found. No GPU is needed to build either."""
import glob
import os
import shutil
import sysconfig

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CUDA_ARCHS = os.environ.get("SPIKEOPS_CUDA_ARCHS", "8.0;9.0")


def find_cuda_home():
    """CUDA_HOME if set, else /usr/local/cuda, else the toolkit that owns the nvcc on PATH: the first
    that has both bin/nvcc and the runtime library to link against."""
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in filter(None, candidates):
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and glob.glob(os.path.join(home, "lib*", "libcudart.so*")):
            return home
    return None


# torch.utils.cpp_extension reads CUDA_HOME once, at import.
if find_cuda_home() and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = find_cuda_home()

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def pip_cuda_include_dirs():
    """Headers that torch's `nvidia-*` wheels ship (cuBLAS, cuSPARSE, ...), which torch's own headers
    include but a bare nvcc toolkit may lack."""
    site = sysconfig.get_paths()["purelib"]
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))


def build_cuda():
    if os.environ.get("SPIKEOPS_NO_CUDA") == "1" or torch.version.cuda is None:
        return False
    cuda_home = find_cuda_home()
    if cuda_home is None:
        print("spikeops: no CUDA toolkit (nvcc + libcudart) found, building the CPU kernels only")
        return False
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", CUDA_ARCHS)
    return True


def extension():
    # Every operator adds its own csrc/<op>/ folder (schema, CPU and CUDA kernels); nothing to list here.
    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
    include_dirs = [os.path.join(HERE, "csrc")]
    if build_cuda():
        sources += sorted(glob.glob("csrc/**/*.cu", recursive=True))
        return cpp_extension.CUDAExtension(
            "spikeops._C",
            sources,
            include_dirs=include_dirs + pip_cuda_include_dirs(),
            define_macros=[("SPIKEOPS_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20", "--fmad=false"]},
            extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "spikeops._C", sources, include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"],
    )


setup(
    name="spikeops",
    version="0.1.0",
    description="Fused Triton/CUDA/C++ operators for spiking neural networks on PyTorch",
    # The Triton kernels live in the top-level kernels/ folder and install as spikeops.kernels.
    packages=find_packages(include=["spikeops", "spikeops.*"]) + ["spikeops.kernels"],
    package_dir={"spikeops.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"triton": ["triton"]},
)
