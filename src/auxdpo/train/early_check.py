"""The checks of a recipe that need no heavy import: unknown keys and the method's name.

Importing TRL (and with it torch and transformers) takes 5 to 8 s on a busy machine; a typo in
a key or in ``method`` should not wait for it. The names a flat recipe may hold are the
fields of :class:`~auxdpo.train.run_arguments.RunArguments` and of ``AuxDPOConfig`` and its
bases (TRL's ``DPOConfig`` and ``_BaseConfig``, transformers' ``TrainingArguments``); the
methods are the keys of :data:`auxdpo.losses.LOSSES`. Here they are read from the installed
sources' text with :mod:`ast`, without running them (about 30 ms).

The reading is trusted only when the class chain is the expected one: every class found in
its file, with the next one as its only base. Otherwise (another TRL or transformers layout)
:func:`recipe_names` returns None and the checks wait for the full resolution after the
imports, which checks the same things. Either way the error is the same line
(:func:`~auxdpo.train.config_check.unknown_keys_message`,
:func:`~auxdpo.train.config_check.unknown_method_message`).
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from auxdpo.train.config_check import unknown_keys_message, unknown_method_message
from auxdpo.train.run_arguments import RunArguments

__all__ = ["CONFIG_CHAIN", "RecipeNames", "early_check", "recipe_names"]

# (package, file inside it, class): AuxDPOConfig and its bases, most derived first.
CONFIG_CHAIN = (("auxdpo", "train/config.py", "AuxDPOConfig"),
                ("trl", "trainer/dpo_config.py", "DPOConfig"),
                ("trl", "trainer/base_config.py", "_BaseConfig"),
                ("transformers", "training_args.py", "TrainingArguments"))
_LOSSES_FILE = ("auxdpo", "losses.py")


@dataclass(frozen=True)
class RecipeNames:
    """What a recipe may name: its keys, the paper's methods, every registered method."""

    keys: frozenset[str]
    paper_methods: tuple[str, ...]
    methods: tuple[str, ...]


def _source(package: str, relative: str) -> ast.Module | None:
    """The parsed text of ``package/relative``, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    return next((node for node in tree.body
                 if isinstance(node, ast.ClassDef) and node.name == name), None)


def _init_false(value: ast.expr | None) -> bool:
    """``field(..., init=False)``: a dataclass field that is not a constructor argument."""
    return isinstance(value, ast.Call) and any(
        keyword.arg == "init" and isinstance(keyword.value, ast.Constant)
        and keyword.value.value is False for keyword in value.keywords)


def _field_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            if "ClassVar" in ast.unparse(statement.annotation) or _init_false(statement.value):
                continue
            names.add(statement.target.id)
    return names


def _config_keys() -> set[str] | None:
    """The init fields of the class chain, or None when the chain is not the expected one."""
    keys: set[str] = set()
    for position, (package, relative, name) in enumerate(CONFIG_CHAIN):
        tree = _source(package, relative)
        node = _class(tree, name) if tree is not None else None
        if node is None:
            return None
        bases = [ast.unparse(base).rpartition(".")[2] for base in node.bases]
        expected = [CONFIG_CHAIN[position + 1][2]] if position + 1 < len(CONFIG_CHAIN) else []
        if bases != expected:
            return None
        keys |= _field_names(node)
    return keys


def _methods() -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(PAPER_METHODS, keys of LOSSES)`` as written in auxdpo/losses.py."""
    tree = _source(*_LOSSES_FILE)
    if tree is None:
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
            else None)
        if isinstance(target, ast.Name) and target.id in ("PAPER_METHODS", "LOSSES"):
            found[target.id] = node.value
    paper, losses = found.get("PAPER_METHODS"), found.get("LOSSES")
    if not isinstance(paper, ast.Tuple) or not isinstance(losses, ast.Dict):
        return None
    names = [[item.value for item in items if isinstance(item, ast.Constant)]
             for items in (paper.elts, losses.keys)]
    if len(names[0]) != len(paper.elts) or len(names[1]) != len(losses.keys):
        return None
    return tuple(names[0]), tuple(names[1])


def recipe_names() -> RecipeNames | None:
    """Every key and method a recipe may name, read from the sources; None when unsure."""
    keys, methods = _config_keys(), _methods()
    if keys is None or methods is None:
        return None
    keys |= {f.name for f in fields(RunArguments)}
    return RecipeNames(frozenset(keys), *methods)


def early_check(values: dict[str, Any]) -> str | None:
    """The error a flat recipe mapping would raise for an unknown key or method, or None.

    ``values`` is the file's mapping or the overrides (each is checked on its own, so that the
    caller can say where the key came from)."""
    names = recipe_names()
    if names is None:
        return None
    unknown = set(values) - names.keys
    if unknown:
        return unknown_keys_message(unknown, names.keys)
    method = values.get("method")
    if "method" in values and method not in names.methods:
        return unknown_method_message(method, names.paper_methods, names.methods)
    return None
