"""The repository's layout contracts: csrc/ organised by op with one naming scheme per role, the Triton
kernels loaded under the one module name ``spikeops.kernels.*``, the tools that locate C++/CUDA sources by
path finding them, and documentation that cites nothing outside the repository."""
import importlib
import os
import pkgutil
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CSRC = REPO / "csrc"
ROLES = ("_math.h", "_host.h", "_cpu.cpp", "_cuda.cu", "_schema.cpp")
SKIP_DIRS = {".git", ".venv", "build", ".benchmarks", "__pycache__", ".pytest_cache", ".hypothesis", "results"}


def _op_dirs():
    return sorted(p for p in CSRC.iterdir() if p.is_dir() and p.name != "common")


def test_csrc_is_organised_by_op_with_one_name_per_role():
    assert _op_dirs(), "no csrc/<op>/ folders"
    assert sorted(p.name for p in CSRC.iterdir() if p.is_file()) == ["module.cpp"]
    for op in _op_dirs():
        names = sorted(p.name for p in op.iterdir() if p.is_file())
        odd = [n for n in names if not any(n == op.name + role for role in ROLES)]
        assert not odd, f"csrc/{op.name}/: files outside the <op>{{{', '.join(ROLES)}}} scheme: {odd}"
        assert f"{op.name}_schema.cpp" in names, f"csrc/{op.name}/ has no schema file"


def test_triton_kernels_load_under_one_module_name():
    import spikeops.kernels as package

    assert package.__name__ == "spikeops.kernels"
    ops = {p.name for p in _op_dirs()}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"spikeops.kernels.{info.name}")
        assert module.__name__ == f"spikeops.kernels.{info.name}"
        assert info.name in ops or info.name.endswith("_math"), \
            f"kernels/{info.name}.py is not named after a csrc/<op>/ folder"
    # The kernels/ folder is also importable as a top-level package from the repository root; nothing may
    # do so, or the same kernels would exist twice under two names (and be compiled and cached twice).
    assert "kernels" not in sys.modules, "something imported the Triton kernels as the top-level 'kernels'"


def test_tools_that_locate_cuda_sources_find_every_one():
    from benchmarks import static_gpu

    every_cu = sorted(CSRC.rglob("*.cu"))
    assert every_cu
    assert [p for p in static_gpu._csrc_files() if p.suffix == ".cu"] == every_cu
    headers = {p for p in static_gpu._csrc_files() if p.suffix == ".h"}
    assert headers == set(CSRC.rglob("*.h"))


def _text_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith((".py", ".md", ".h", ".cpp", ".cu", ".txt", ".ini", ".cfg", ".toml", ".yml", ".yaml")) \
                    or name == "Makefile":
                yield Path(root) / name


def test_no_file_cites_a_document_outside_the_repository():
    # Formulas and decisions live in docs/ and in docstrings; an external specification is not citable.
    cited = re.compile("SP" "EC" + r"(\.md|\s+§|\s+Decision)")  # split, so this line is no match itself
    offenders = []
    for path in _text_files():
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}" for m in cited.finditer(text)]
    assert not offenders, f"citations of an external document: {offenders}"


def test_docs_pages_linked_from_the_readme_exist():
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[\w./-]+?)(?:#[\w-]+)?\)", readme))
    assert linked, "the README links no docs/ page"
    missing = [page for page in linked if not (REPO / page).is_file()]
    assert not missing, f"README links missing docs pages: {missing}"
