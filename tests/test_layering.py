"""The static import graph of ``spikeops/``: layers, upward imports and cycles.

Graph. Every ``.py`` file under ``spikeops/`` is parsed with ``ast``; every ``import`` / ``from ... import``
statement counts, at module level and inside functions or classes alike (a lazy import is still a
dependency). Relative imports are resolved against the importing module. ``from package import name``
is an edge to ``package.name`` when that is a module, else to ``package`` (its ``__init__``). Only edges
between modules of ``spikeops`` are kept (torch, triton, SpikingJelly are outside); importing a module
implicitly runs its parent packages' ``__init__``, which is not an edge.

Layers, lowest first; a module may import from its own layer and from any layer below:

  0 base     ``spikeops.backends``, ``spikeops.surrogate``, ``spikeops._kernel_package``, ``spikeops._C``,
             ``spikeops._build_info`` (written by setup.py) and the Triton kernels ``spikeops.kernels.*``
             (csrc/ and kernels/ sit here)
  1 ops      ``spikeops.ops.**``: references, autograd Functions, registration, dispatch
  2 nn       ``spikeops.nn.**``: neuron modules and attention blocks
  3 models   ``spikeops.models.**``
  4 tools    ``spikeops.energy.**``, ``spikeops.convert``, ``spikeops.legacy.**``: they observe, rewrite or
             stand in for models; ``spikeops.info`` reports what is installed

Facades. The compatibility modules at the package root (``spikeops/__init__.py``, ``neurons.py``,
``multibit.py``, ``attention.py``, ``attention_bipolar.py``, ``attention_experts.py``, ``functional.py``)
re-export what lives in the layers. A facade sits just above what it imports: its layer is the highest
layer among its imports (facades resolved first, recursively), so importing a facade is upward exactly
when the facade re-exports something upward of the importer. ``spikeops/__init__.py`` re-exports
everything, so it is the top; nothing inside the package may import it.

Upward import: an edge from a module to one of a strictly higher layer. At most ``MAX_UPWARD`` are
allowed, and each of them is listed below in ``ALLOWED_UPWARD`` with its reason.

Cycles. Edges from a package ``__init__`` into its own sub-tree are aggregation (the package collecting
its public names) and are left out; every other edge counts. The remaining graph must have no cycle.

``spikeops/ops/**`` must import nothing from ``energy``, ``models``, ``nn`` or ``convert``, and no
private (underscore) name of ``spikeops.functional``.

Run as a script (``python tests/test_layering.py``) to print the graph's upward imports and cycles.
"""
from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spikeops")
PACKAGE = "spikeops"
MAX_UPWARD = 3

BASE, OPS, NN, MODELS, TOOLS, TOP = 0, 1, 2, 3, 4, 5
LAYER_NAMES = {BASE: "base", OPS: "ops", NN: "nn", MODELS: "models", TOOLS: "tools", TOP: "top"}
BASE_MODULES = {"spikeops.backends", "spikeops.surrogate", "spikeops._kernel_package", "spikeops._C",
                "spikeops._build_info"}
FACADES = {"spikeops.neurons", "spikeops.multibit", "spikeops.attention", "spikeops.attention_bipolar",
           "spikeops.attention_experts", "spikeops.functional"}
FORBIDDEN_FROM_OPS = ("spikeops.energy", "spikeops.models", "spikeops.nn", "spikeops.convert")
# (importer, imported): why this one upward import is accepted.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def discover(root: str = ROOT) -> dict[str, str]:
    """Module name -> file path of every .py under ``root``."""
    modules = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(folder, d)))
        for file in sorted(files):
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                modules[_module_name(path)] = path
    return modules


def _is_package(modules: dict[str, str], name: str) -> bool:
    return name in modules and modules[name].endswith("__init__.py")


def _known(modules: dict[str, str], name: str) -> bool:
    return name in modules or name == "spikeops._C" or name == "spikeops.kernels" or \
        name.startswith("spikeops.kernels.")


def imports_of(modules: dict[str, str], name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement of module ``name``."""
    path = modules[name]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if _is_package(modules, name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            names = [alias.name for alias in node.names]
            submodules = [n for n in names if _known(modules, f"{source}.{n}")]
            if submodules:
                found += [(f"{source}.{n}", [], node.lineno) for n in submodules]
            others = [n for n in names if n not in submodules]
            if others:
                found.append((source, others, node.lineno))
    return found


def build_graph(root: str = ROOT):
    """modules, and edges {(importer, imported): [(names, line), ...]}."""
    modules = discover(root)
    edges: dict[tuple[str, str], list] = {}
    for name in modules:
        for target, names, line in imports_of(modules, name):
            if target != name:
                edges.setdefault((name, target), []).append((names, line))
    return modules, edges


def _path_layer(name: str) -> int | None:
    if name == PACKAGE:
        return TOP
    if name in BASE_MODULES or name == "spikeops.kernels" or name.startswith("spikeops.kernels."):
        return BASE
    for prefix, layer in (("spikeops.ops", OPS), ("spikeops.nn", NN), ("spikeops.models", MODELS),
                          ("spikeops.energy", TOOLS), ("spikeops.convert", TOOLS), ("spikeops.legacy", TOOLS),
                          ("spikeops.info", TOOLS)):
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return None


def layers(modules, edges, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Layer of every module; facades take the highest layer they import (see the module docstring)."""
    overrides = overrides or {}
    out: dict[str, int] = {}
    targets: dict[str, set] = {}
    for (src, dst) in edges:
        targets.setdefault(src, set()).add(dst)

    def layer_of(name: str, seen=()) -> int:
        if name in out:
            return out[name]
        if name in overrides:
            out[name] = overrides[name]
            return out[name]
        fixed = _path_layer(name)
        if fixed is not None:
            out[name] = fixed
            return fixed
        if name in FACADES or name not in modules:
            if name in seen:  # a cycle among facades: the test for cycles reports it
                return BASE
            imported = [layer_of(t, seen + (name,)) for t in targets.get(name, ())]
            out[name] = max(imported, default=BASE)
            return out[name]
        raise AssertionError(f"{name}: no layer assigned; add it to a layer in tests/test_layering.py")

    for name in list(modules) + [t for (_, t) in edges]:
        layer_of(name)
    return out


def upward_imports(modules, edges, layer: dict[str, int]) -> list[tuple[str, str]]:
    return sorted((src, dst) for (src, dst) in edges if layer[dst] > layer[src])


def cycles(modules, edges) -> list[list[str]]:
    """Strongly connected components of more than one module (or with a self-loop), aggregation left out."""
    graph: dict[str, list] = {m: [] for m in modules}
    for (src, dst) in edges:
        if _is_package(modules, src) and dst.startswith(src + "."):
            continue
        if dst in graph:
            graph[src].append(dst)
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(edges, layer, pairs) -> str:
    lines = []
    for src, dst in pairs:
        where = ", ".join(f"line {line}" for _, line in edges[(src, dst)])
        lines.append(f"  {src} ({LAYER_NAMES[layer[src]]}) -> {dst} ({LAYER_NAMES[layer[dst]]}), {where}")
    return "\n".join(lines)


# ---------------------------------------------------------------- tests
def test_every_module_has_a_layer():
    modules, edges = build_graph()
    layer = layers(modules, edges)
    assert set(modules) <= set(layer)


def test_at_most_three_upward_imports():
    modules, edges = build_graph()
    layer = layers(modules, edges)
    upward = upward_imports(modules, edges, layer)
    unexplained = [pair for pair in upward if pair not in ALLOWED_UPWARD]
    assert len(upward) <= MAX_UPWARD and not unexplained, (
        f"{len(upward)} upward import(s) (at most {MAX_UPWARD}, each listed in ALLOWED_UPWARD):\n"
        + _describe(edges, layer, upward))


def test_no_import_cycles():
    modules, edges = build_graph()
    found = cycles(modules, edges)
    assert not found, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def test_ops_import_nothing_from_the_layers_above():
    modules, edges = build_graph()
    bad = []
    for (src, dst), statements in sorted(edges.items()):
        if not (src == "spikeops.ops" or src.startswith("spikeops.ops.")):
            continue
        if any(dst == f or dst.startswith(f + ".") for f in FORBIDDEN_FROM_OPS) or dst == PACKAGE:
            bad.append(f"  {src} -> {dst}")
        if dst == "spikeops.functional":
            private = sorted({n for names, _ in statements for n in names if n.startswith("_")})
            if private:
                bad.append(f"  {src} -> spikeops.functional private {private}")
    assert not bad, "spikeops.ops imports from above it:\n" + "\n".join(bad)


def test_nothing_in_the_package_imports_its_top_level():
    modules, edges = build_graph()
    importers = sorted(src for (src, dst) in edges if dst == PACKAGE)
    assert not importers, f"modules importing the spikeops package itself: {importers}"


def test_facades_only_reexport():
    """The compatibility modules define no functions or classes of their own (thin aliases)."""
    modules, _ = build_graph()
    heavy = []
    for name in sorted(FACADES):
        if name not in modules:
            continue
        tree = ast.parse(open(modules[name], encoding="utf-8").read())
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
        if defined and name != "spikeops.functional":
            heavy.append(f"  {name}: {defined}")
    assert not heavy, "facade modules defining code:\n" + "\n".join(heavy)


if __name__ == "__main__":
    modules, edges = build_graph()
    overrides = {}
    if "--as-modules" in sys.argv:  # the old tree: the root modules hold the module layer itself
        overrides = {m: NN for m in FACADES if m != "spikeops.functional"}
        overrides["spikeops.functional"] = OPS
    layer = layers(modules, edges, overrides)
    upward = upward_imports(modules, edges, layer)
    print(f"{len(modules)} modules, {len(edges)} edges, {len(upward)} upward imports")
    print(_describe(edges, layer, upward))
    for c in cycles(modules, edges):
        print("cycle:", " -> ".join(c))
