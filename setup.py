"""Builds spikeops._C: the fused CPU kernels always, the CUDA kernels whenever torch is a CUDA build and one
usable CUDA toolkit is found. No GPU is needed to build either. Metadata lives in pyproject.toml.

    pip install --no-build-isolation .          # CPU kernels, + CUDA kernels where nvcc is found
    SPIKEOPS_NO_CUDA=1 pip install ...           # CPU kernels only
    SPIKEOPS_NO_EXTENSION=1 pip install ...      # pure Python (reference + Triton backends), seconds
    python setup.py build_ext --inplace          # the developer path (`make build`)

Other knobs: SPIKEOPS_CUDA_ARCHS / TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX": cubins for A100-class and
H100-class GPUs, PTX that newer GPUs compile at load), SPIKEOPS_REQUIRE_CUDA=1 (fail instead of building
CPU-only when the CUDA kernels cannot be built), MAX_JOBS (parallel compile jobs; default: all cores).
Every build writes spikeops/_build_info.py: the torch and CUDA versions and the GPU architectures it was
built for, which spikeops checks at import and at the first CUDA call.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSION = os.environ.get("SPIKEOPS_NO_EXTENSION") == "1"
NO_CUDA = os.environ.get("SPIKEOPS_NO_CUDA") == "1"
REQUIRE_CUDA = os.environ.get("SPIKEOPS_REQUIRE_CUDA") == "1"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def log(message):
    print(f"spikeops: {message}", file=sys.stderr, flush=True)


def nvcc_version(home):
    """The release ("13.0") of `home`/bin/nvcc, or None when it is missing or does not run."""
    nvcc = os.path.join(home, "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def toolkit_problem(home):
    """None when `home` is a usable CUDA toolkit (an nvcc that runs, the runtime library), else what is wrong."""
    if not os.path.isdir(home):
        return f"{home} does not exist"
    if nvcc_version(home) is None:
        return f"{home}/bin/nvcc is missing or does not run"
    if not glob.glob(os.path.join(home, "lib*", "libcudart.so*")) and \
            not glob.glob(os.path.join(home, "targets", "*", "lib", "libcudart.so*")):
        return f"{home} has no libcudart"
    return None


def resolve_cuda_home():
    """(toolkit, reason): the one CUDA toolkit to build with, or None and why not.

    A toolkit the user names (CUDA_HOME, else CUDA_PATH) is used as given; when it is broken the build is
    CPU-only (with a message), never silently another toolkit. Otherwise /usr/local/cuda, else the toolkit
    owning the `nvcc` on PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        given = os.environ.get(var)
        if given:
            problem = toolkit_problem(given)
            if problem is None:
                return given, None
            hint = " (unset it to use /usr/local/cuda)" if given != "/usr/local/cuda" and \
                toolkit_problem("/usr/local/cuda") is None else ""
            return None, f"{var}={given} is not a usable CUDA toolkit: {problem}{hint}"
    candidates = ["/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if toolkit_problem(home) is None:
            return home, None
    return None, "no CUDA toolkit found (nvcc + libcudart in CUDA_HOME, /usr/local/cuda or on PATH)"


def cuda_plan():
    """(toolkit or None, message): whether this build compiles the CUDA kernels, decided once."""
    if NO_EXTENSION:
        return None, None
    if NO_CUDA:
        return None, "SPIKEOPS_NO_CUDA=1"
    home, reason = resolve_cuda_home()
    return home, reason


CUDA_HOME, CUDA_SKIP_REASON = cuda_plan()
# torch.utils.cpp_extension reads CUDA_HOME once, at import: give it the toolkit chosen above, or none at all.
for _var in ("CUDA_HOME", "CUDA_PATH"):
    os.environ.pop(_var, None)
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME


def pip_cuda_include_dirs():
    """Headers that torch's `nvidia-*` wheels ship (cuBLAS, cuSPARSE, ...), which torch's own headers
    include but a bare nvcc toolkit may lack."""
    site = sysconfig.get_paths()["purelib"]
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))


def build_info(torch, with_cuda, archs, skipped=None):
    return (
        '"""Written by setup.py at build time: what spikeops._C was built against (checked at import)."""\n'
        f"EXTENSION = {not NO_EXTENSION!r}\n"
        f"TORCH_VERSION = {torch.__version__ if torch else None!r}\n"
        f"TORCH_CUDA_VERSION = {(torch.version.cuda if torch else None)!r}\n"
        f"WITH_CUDA = {with_cuda!r}\n"
        f"NVCC_VERSION = {(nvcc_version(CUDA_HOME) if with_cuda else None)!r}\n"
        f"CUDA_ARCHS = {(archs if with_cuda else None)!r}\n"
        f"CUDA_SKIPPED = {(None if with_cuda else skipped or CUDA_SKIP_REASON)!r}\n"
        f"PYTHON = {'.'.join(map(str, sys.version_info[:2]))!r}\n"
    )


def write_build_info(package_root, text):
    path = os.path.join(package_root, "spikeops", "_build_info.py")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class BuildPy(build_py):
    """Pure-Python installs (SPIKEOPS_NO_EXTENSION=1) still record that they have no extension."""

    def run(self):
        super().run()
        if NO_EXTENSION:
            write_build_info(self.build_lib, build_info(None, False, None))


def extension_setup():
    """ext_modules and the build_ext command; imports torch (so only when an extension is built)."""
    import torch
    from torch.utils import cpp_extension

    with_cuda = CUDA_HOME is not None and torch.version.cuda is not None
    reason = CUDA_SKIP_REASON if CUDA_HOME is None else (None if with_cuda else "torch is a CPU build")
    nvcc = nvcc_version(CUDA_HOME) if with_cuda else None
    if with_cuda and nvcc.split(".")[0] != torch.version.cuda.split(".")[0]:
        with_cuda, reason = False, (f"nvcc {nvcc} in {CUDA_HOME} and torch's CUDA {torch.version.cuda} differ in "
                                    "major version")
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or os.environ.get("SPIKEOPS_CUDA_ARCHS") or DEFAULT_CUDA_ARCHS
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        log(f"building the CPU and CUDA kernels (nvcc {nvcc} from {CUDA_HOME}, torch {torch.__version__}, "
            f"GPU architectures {archs})")
    elif REQUIRE_CUDA:
        raise SystemExit(f"spikeops: SPIKEOPS_REQUIRE_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    else:
        log(f"building the CPU kernels only ({reason}; torch {torch.__version__})")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))

    # Release build: no debug info (it quadrupled the library's size and slowed the build), -O3 on the kernels.
    cxx_flags = ["-O3", "-g0", "-std=c++20", "-fopenmp"]
    nvcc_flags = ["-O3", "-std=c++20", "--fmad=false", "-Xcompiler", "-g0"]
    link_flags = ["-fopenmp", "-Wl,--strip-debug"]
    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    include_dirs = [os.path.join(HERE, "csrc")]
    if with_cuda:
        ext = cpp_extension.CUDAExtension(
            "spikeops._C", sources + sorted(glob.glob("csrc/**/*.cu", recursive=True)),
            include_dirs=include_dirs + pip_cuda_include_dirs(), define_macros=[("SPIKEOPS_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=link_flags)
    else:
        ext = cpp_extension.CppExtension("spikeops._C", sources, include_dirs=include_dirs,
                                         extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    info = build_info(torch, with_cuda, archs, reason)

    class BuildExt(cpp_extension.BuildExtension):
        def build_extensions(self):
            # Python's own CFLAGS carry -g; drop it rather than rely on the later -g0 alone.
            self.compiler.compiler_so = [f for f in self.compiler.compiler_so if f != "-g"]
            super().build_extensions()

        def run(self):
            super().run()
            write_build_info(HERE if self.inplace else self.build_lib, info)

    build_ext = BuildExt.with_options(use_ninja=shutil.which("ninja") is not None or _has_ninja_module())
    return [ext], build_ext


def _has_ninja_module():
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True


# Making an sdist or reading metadata compiles nothing, so it needs no torch (see tools/build_backend.py).
_BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "bdist_egg", "install", "develop", "editable_wheel"}
METADATA_ONLY = any(a in ("sdist", "egg_info", "dist_info") for a in sys.argv[1:]) and \
    not any(a in _BUILD_COMMANDS for a in sys.argv[1:])

if METADATA_ONLY:
    ext_modules, cmdclass = [], {"build_py": BuildPy}
elif NO_EXTENSION:
    log("SPIKEOPS_NO_EXTENSION=1: installing pure Python (the 'torch' and 'triton' backends), no compiled kernels")
    ext_modules, cmdclass = [], {"build_py": BuildPy}
else:
    ext_modules, build_ext_cmd = extension_setup()
    cmdclass = {"build_py": BuildPy, "build_ext": build_ext_cmd}

setup(
    # The Triton kernels live in the top-level kernels/ folder and install as spikeops.kernels.
    packages=find_packages(include=["spikeops", "spikeops.*"]) + ["spikeops.kernels"],
    package_dir={"spikeops.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
