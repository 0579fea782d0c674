"""The package's layers point one way, no imports form a cycle, and reports load no torch.

Layers (DESIGN.md, "Package layout"): cli → benchmark → {methods, datasets, store} →
{nets, transforms, optim} → the leaf modules {registry, errors, typed, paths, plugins,
vocabulary and the package root}; reports → store and the leaves. The import graph is read
from the source with `ast`, every import statement counted, including those inside functions.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cmrbench"
# the package root is a leaf: it holds `__version__` and names it imports only on first use,
# so that `import cmrbench.reports` (which runs it) stays light
LEAVES = frozenset({"cmrbench", "registry", "errors", "typed", "paths", "plugins", "vocabulary"})
TOOLKIT = frozenset({"nets", "transforms", "optim"})
# what each layer may import (besides itself); cli sits on top
MAY_IMPORT: dict[str, frozenset[str]] = {
    "cli": frozenset({"benchmark", "methods", "datasets", "store", "reports", *TOOLKIT, *LEAVES}),
    "benchmark": frozenset({"methods", "datasets", "store", *TOOLKIT, *LEAVES}),
    "methods": TOOLKIT | LEAVES,
    "datasets": TOOLKIT | LEAVES,
    "store": TOOLKIT | LEAVES,
    "nets": TOOLKIT | LEAVES,
    "transforms": TOOLKIT | LEAVES,
    "optim": TOOLKIT | LEAVES,
    "reports": frozenset({"store", *LEAVES}),
    **{leaf: LEAVES for leaf in LEAVES},
}
TORCH_FREE_LAYERS = ("reports", "store")
TORCH_PACKAGES = ("torch", "timm")


@dataclass(frozen=True)
class Import:
    """One import statement: the importing module, its line, and what it names."""

    module: str
    line: int
    target: str  # a cmrbench module, or a third-party top-level package


def module_name(path: Path) -> str:
    """``cmrbench/a/b.py`` → ``cmrbench.a.b``; a package's ``__init__.py`` → the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of a dotted ``name`` that is a module (``from x import y`` may
    name a module ``x.y`` or a value in ``x``)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import in ``path`` (at any depth), cmrbench targets resolved to modules."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "cmrbench":
                target = _resolve(name, modules)
            else:
                target = name.split(".")[0]
            if target and target != module:
                found.append(Import(module, node.lineno, target))
    return found


def import_graph() -> dict[str, list[Import]]:
    """Module → its imports, for every module of the package."""
    modules = source_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def layer(module: str) -> str:
    """The layer of a cmrbench module: its first sub-package or module name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _internal(graph: dict[str, list[Import]]) -> dict[str, set[str]]:
    return {
        module: {i.target for i in found if i.target.startswith("cmrbench")}
        for module, found in graph.items()
    }


def layer_violations(graph: dict[str, list[Import]]) -> list[str]:
    """Each import of a cmrbench module from a layer that may not import it."""
    return [
        f"{i.module} (line {i.line}) imports {i.target}: {layer(i.module)} may not "
        f"import {layer(i.target)}"
        for found in graph.values()
        for i in found
        if i.target.startswith("cmrbench")
        and layer(i.target) != layer(i.module)
        and layer(i.target) not in MAY_IMPORT.get(layer(i.module), ())
    ]


def torch_offences(graph: dict[str, list[Import]]) -> list[str]:
    """For each import of torch or timm reachable from a torch-free layer, the shortest
    chain of cmrbench imports that reaches it."""
    internal = _internal(graph)
    shortest: dict[tuple[str, str], list[str]] = {}
    for start in sorted(m for m in graph if layer(m) in TORCH_FREE_LAYERS):
        chains = {start: [start]}
        todo = [start]
        while todo:  # breadth first, so each module is reached by a shortest chain
            module = todo.pop(0)
            # importing a module first runs the __init__ of every package above it
            parents = {".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 1)}
            for target in sorted(
                (internal.get(module, set()) | (parents & graph.keys())) - chains.keys()
            ):
                chains[target] = [*chains[module], target]
                todo.append(target)
        for module, chain in chains.items():
            for package in {i.target for i in graph.get(module, ()) if i.target in TORCH_PACKAGES}:
                if len(chain) < len(shortest.get((module, package), [*chain, ""])):
                    shortest[(module, package)] = chain
    return [
        f"{' → '.join(chain)} imports {package}" for (_, package), chain in sorted(shortest.items())
    ]


# ------------------------------------------------------------------ the checks themselves


def test_the_import_parser_resolves_relative_function_level_and_from_imports(tmp_path) -> None:
    modules = {
        name: Path()
        for name in ("cmrbench", "cmrbench.a", "cmrbench.a.b", "cmrbench.a.d", "cmrbench.c")
    }
    source = tmp_path / "b.py"
    source.write_text(
        "from .. import c\nfrom ..c import thing\nfrom . import b\n"
        "def f():\n    import torch.nn\n    from cmrbench.a import d\n"
    )
    found = imports_of("cmrbench.a.b", source, modules)
    assert sorted((i.line, i.target) for i in found) == [
        (1, "cmrbench.c"),
        (2, "cmrbench.c"),
        (5, "torch"),
        (6, "cmrbench.a.d"),
    ]
    package = tmp_path / "__init__.py"
    package.write_text("from .b import y\nfrom cmrbench.c import z\n")
    assert [i.target for i in imports_of("cmrbench.a", package, modules)] == [
        "cmrbench.a.b",
        "cmrbench.c",
    ]


def test_tarjan_finds_each_cycle_with_its_members_and_nothing_in_a_dag() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = sorted(m for m in source_modules() if layer(m) not in MAY_IMPORT)
    assert not unknown, f"modules outside every layer (add them to MAY_IMPORT): {unknown}"


def test_no_layer_imports_a_layer_above_it() -> None:
    violations = layer_violations(import_graph())
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_no_import_cycle_between_modules() -> None:
    cycles = find_cycles(_internal(import_graph()))
    assert not cycles, "module import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in _internal(import_graph()).items():
        packages.setdefault(layer(module), set()).update(
            layer(t) for t in targets if layer(t) != layer(module)
        )
    cycles = find_cycles(packages)
    assert not cycles, "package import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_reports_and_store_import_no_torch_even_through_cmrbench_modules() -> None:
    offences = torch_offences(import_graph())
    assert not offences, "torch reached from a torch-free layer:\n" + "\n".join(offences)


def test_the_checks_name_a_violation_a_cycle_and_a_torch_chain_in_a_made_up_graph() -> None:
    graph = {
        "cmrbench.reports.site": [Import("cmrbench.reports.site", 3, "cmrbench.store.read")],
        "cmrbench.store.read": [Import("cmrbench.store.read", 7, "cmrbench.optim")],
        "cmrbench.optim": [Import("cmrbench.optim", 1, "torch")],
        "cmrbench.methods.x": [Import("cmrbench.methods.x", 9, "cmrbench.benchmark.grid")],
        "cmrbench.benchmark.grid": [Import("cmrbench.benchmark.grid", 2, "cmrbench.methods.x")],
    }
    assert layer_violations(graph) == [
        "cmrbench.methods.x (line 9) imports cmrbench.benchmark.grid: "
        "methods may not import benchmark"
    ]
    assert find_cycles(_internal(graph)) == [["cmrbench.benchmark.grid", "cmrbench.methods.x"]]
    assert torch_offences(graph) == ["cmrbench.store.read → cmrbench.optim imports torch"]


def test_importing_the_reports_and_the_store_loads_no_torch() -> None:
    code = (
        "import importlib, importlib.util, pkgutil, sys\n"
        "for name in ('cmrbench.reports', 'cmrbench.store'):\n"
        "    if importlib.util.find_spec(name) is None:\n"
        "        continue   # a layer that does not exist yet\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


REPORTS_MODULE_LINES = 420  # "about 400" (issue 23): one question or one page per module


def test_no_reports_module_grows_past_about_400_lines() -> None:
    lengths = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
        for path in (PACKAGE / "reports").rglob("*.py")
    }
    assert len(lengths) > 30
    assert {m: n for m, n in lengths.items() if n > REPORTS_MODULE_LINES} == {}
