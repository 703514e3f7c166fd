"""The house rules of ``src/auxdpo``: modules a reader can hold, imports that flow one way.

(a) no module over :data:`MAX_LINES` lines; (b) no import cycle among auxdpo's modules,
function-level (lazy) imports included; (c) the public packages users import still import.
Read statically with :mod:`ast`: a relative import is resolved against its package, and
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those parent edges are not
counted (every submodule would otherwise "cycle" through its own package).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / "auxdpo").rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The auxdpo modules ``name`` imports anywhere in its body (module or function level)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    out.add(f"{target}.{alias.name}")
                elif target in known:
                    out.add(target)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_no_module_over_the_line_limit():
    long = {str(path.relative_to(SRC)): n for path in (SRC / "auxdpo").rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_no_import_cycle():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles: {found}"


def test_the_cycle_finder_sees_lazy_relative_and_submodule_imports(tmp_path):
    package = {"__init__.py": "", "a.py": "from . import b\n",
               "b.py": "def f():\n    from pkg.c import x\n", "c.py": "from pkg import a\nx = 1\n"}
    for name, text in package.items():
        (tmp_path / "pkg").mkdir(exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    known = {f"pkg.{n[:-3]}" if n != "__init__.py" else "pkg": tmp_path / "pkg" / n
             for n in package}
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    assert cycles(graph) == {frozenset({"pkg.a", "pkg.b", "pkg.c"})}


@pytest.mark.parametrize("name", ["auxdpo", "auxdpo.train", "auxdpo.losses", "auxdpo.lab",
                                  "auxdpo.oracle", "auxdpo.data", "auxdpo.evaluation",
                                  "auxdpo.protocol", "auxdpo.offsets"])
def test_public_packages_import(name):
    importlib.import_module(name)


def test_public_names_resolve():
    from auxdpo.evaluation import pairwise_accuracy, rewardbench2_scores, score_pairs
    from auxdpo.offsets import MODES, AuxOffsets
    from auxdpo.train import AuxDPOConfig, AuxDPOTrainer

    assert callable(pairwise_accuracy) and callable(rewardbench2_scores)
    assert callable(score_pairs) and AuxDPOConfig and AuxDPOTrainer
    assert AuxOffsets.__module__ == "auxdpo.offsets.store" and MODES == ("global", "batch",
                                                                         "projection")
