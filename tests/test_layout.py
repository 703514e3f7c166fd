"""The house rules of ``src/auxdpo``: modules a reader can hold, imports that flow one way.

(a) no module over :data:`MAX_LINES` lines; (b) the import contracts of ``pyproject.toml``
(``[tool.importlinter]``: the library never imports the research harness ``auxdpo.harness``,
layers inside the harness and the library, no cycle among siblings at any depth) hold, checked
by import-linter's ``lint-imports``, function-level (lazy) imports included; (c) no module
imports another module's private name; (d) no path outside the repository is baked into
``src/``; (e) the public packages users import still import.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 600   # one concept per module; a cohesive one may run to ~600 lines
# Checked for private imports: everything but tests (which may reach into a module they test).
CHECKED = ("src", "benchmarks", "docs/tools", "scripts")
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def test_no_module_over_the_line_limit():
    long = {str(path.relative_to(SRC)): n for path in (SRC / "auxdpo").rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def lint_imports_command() -> list[str]:
    script = Path(sys.executable).with_name("lint-imports")
    if script.exists():
        return [str(script)]
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not installed: pip install -e '.[dev]' (import-linter)")
    return [found]


def test_import_contracts_hold():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([*lint_imports_command(), "--no-cache"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def private_imports(paths) -> set[tuple[str, str, str]]:
    """``(file, module, name)`` for each ``from auxdpo... import _name`` in ``paths``."""
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and (node.module or "").split(".")[0] == "auxdpo":
                found |= {(path.relative_to(ROOT).as_posix(), node.module, alias.name)
                          for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")}
    return found


def test_no_private_name_imported_across_modules():
    paths = [p for folder in CHECKED for p in sorted((ROOT / folder).rglob("*.py"))]
    found = private_imports(paths) - KNOWN_PRIVATE_IMPORTS
    assert not found, f"private names imported from another module: {sorted(found)}"


def test_the_private_import_finder_sees_them(tmp_path, monkeypatch):
    path = tmp_path / "m.py"
    path.write_text("from auxdpo.x import _y, z\nfrom os import _exit\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert private_imports([path]) == {("m.py", "auxdpo.x", "_y")}


def test_no_path_outside_the_repository_in_src():
    hits = [p.relative_to(ROOT).as_posix() for p in sorted(SRC.rglob("*.py"))
            if "../shared" in p.read_text(encoding="utf-8")
            and "auxdpo/train/" not in p.as_posix()]
    assert not hits, f"machine-local paths (use AUXDPO_DATA_DIR or a hub name): {hits}"


@pytest.mark.parametrize("name", ["auxdpo", "auxdpo.train", "auxdpo.losses", "auxdpo.data",
                                  "auxdpo.offsets", "auxdpo.harness", "auxdpo.harness.lab",
                                  "auxdpo.harness.oracle", "auxdpo.harness.evaluation",
                                  "auxdpo.harness.protocol"])
def test_public_packages_import(name):
    importlib.import_module(name)


def test_public_names_resolve():
    from auxdpo.harness.evaluation import pairwise_accuracy, rewardbench2_scores, score_pairs
    from auxdpo.offsets import MODES, AuxOffsets
    from auxdpo.train import AuxDPOConfig, AuxDPOTrainer

    assert callable(pairwise_accuracy) and callable(rewardbench2_scores)
    assert callable(score_pairs) and AuxDPOConfig and AuxDPOTrainer
    assert AuxOffsets.__module__ == "auxdpo.offsets.store" and MODES == ("global", "batch",
                                                                         "projection")
