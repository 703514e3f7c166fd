"""A training recipe (YAML file + ``--key value`` overrides) read and resolved as a run does,
and ``auxdpo train --config FILE --check``: the same, with nothing loaded.

:func:`resolve_recipe` is what ``auxdpo train`` runs before training: the file is read (YAML
errors name the file and line), unknown keys and methods are refused before TRL is imported
(:mod:`auxdpo.train.early_check`), a relative ``dataset_name`` of the file is found from the
current folder or else beside the file, the overrides are applied, and the flat mapping becomes
``(RunArguments, AuxDPOConfig)`` through :func:`auxdpo.train.run.resolve_config`, so unknown
keys, value types and every check of the installed TRL and transformers apply. An error about
a key that came from the file names the file; one about an override does not.

:func:`check_recipe` adds what can be checked without the model and the data: the data source
is named (a local data file must exist; a hub name is not looked up) and so is the model. A
recipe written for a GPU (``bf16: true``) is checked as it would be on a GPU with bf16 when
this machine has none (transformers refuses bf16 without one unless ``use_cpu`` is set), and
the summary says so. No model, tokenizer or data is loaded and nothing is written; the time
is that of importing TRL (docs/trainer.md, "Checking a recipe").
"""

from __future__ import annotations

import os
import re
from typing import Any

from auxdpo.train.run_arguments import looks_like_data_file, parse_overrides
from auxdpo.yamlio import load_yaml

__all__ = ["check_recipe", "read_recipe_file", "resolve_recipe"]

_LEADING_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\b")


def read_recipe_file(path: str) -> dict[str, Any]:
    """The flat mapping of a YAML recipe file (empty file: ``{}``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = load_yaml(handle) or {}
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 (byte {exc.start + 1})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values")
    return values


def _named(message: str, path: str | None, overrides: dict[str, Any]) -> str:
    """``message`` with the file in front, unless there is no file or the message is about
    a key the command line set."""
    match = _LEADING_NAME.match(message)
    if path is None or (match and match.group(1) in overrides):
        return message
    return f"{path}: {message}"


def _dataset_beside_recipe(name: Any, recipe: str, dataset_format: Any) -> Any:
    """A relative ``dataset_name`` of the recipe file: from the current folder when it is
    there, else from the recipe's folder; a file found in neither is an error naming both."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or os.path.exists(name):
        return name
    beside = os.path.normpath(os.path.join(os.path.dirname(recipe), name))
    if os.path.exists(beside):
        return beside
    fmt = dataset_format if isinstance(dataset_format, str) else None
    if looks_like_data_file(name, fmt):
        raise FileNotFoundError(f"{recipe}: dataset file {name} does not exist: looked for "
                                f"{os.path.abspath(name)} (from the current folder) and "
                                f"{os.path.abspath(beside)} (beside the recipe)")
    return name  # a hub name


def _read(path: str | None, tokens: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's mapping and the command line's overrides, read before TRL is imported; a
    relative dataset_name of the file is resolved (:func:`_dataset_beside_recipe`), and
    unknown keys and methods are refused (:mod:`auxdpo.train.early_check`)."""
    values = read_recipe_file(path) if path else {}
    overrides = parse_overrides(tokens)
    _early_check(path, values, overrides)
    if path and "dataset_name" in values and "dataset_name" not in overrides:
        values["dataset_name"] = _dataset_beside_recipe(
            values["dataset_name"], path, {**values, **overrides}.get("dataset_format"))
    return values, overrides


def _early_check(path: str | None, values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Unknown keys and methods, in a fraction of a second (before TRL is imported)."""
    from auxdpo.train.early_check import early_check

    from_file = {key: value for key, value in values.items() if key not in overrides}
    for mapping, where in ((from_file, path), (overrides, None)):
        message = early_check(mapping)
        if message:
            raise ValueError(_named(message, where, {}))


def _resolve(path: str | None, values: dict[str, Any], overrides: dict[str, Any],
             extra: dict[str, Any] | None = None):
    from auxdpo.train.config_check import unknown_keys_message
    from auxdpo.train.run import config_key_names, resolve_config

    known = config_key_names()
    for unknown, where in ((set(values) - set(overrides) - known, path),
                           (set(overrides) - known, None)):
        if unknown:
            raise ValueError(_named(unknown_keys_message(unknown, known), where, {}))
    try:
        return resolve_config({**values, **overrides, **(extra or {})})
    except ValueError as exc:
        raise ValueError(_named(str(exc), path, overrides)) from None


def resolve_recipe(path: str | None, tokens: list[str]):
    """``(RunArguments, AuxDPOConfig)`` of the recipe file ``path`` (or None) with the
    command line's ``--key value`` tokens applied."""
    return _resolve(path, *_read(path, tokens))


def _model_source(name: str) -> str:
    from auxdpo.train.tiny import is_tiny_name

    if is_tiny_name(name):
        return f"{name} (random weights, built here)"
    return f"{name} ({'folder' if os.path.isdir(name) else 'hub'})"


def _needs_bf16_gpu(values: dict[str, Any]) -> bool:
    from auxdpo.train.defaults import bf16_available

    wants = values.get("bf16") is True or values.get("bf16_full_eval") is True
    return wants and values.get("use_cpu") is not True and not bf16_available()


def check_recipe(path: str | None, tokens: list[str]) -> str:
    """Resolve the recipe without loading anything; return the one-line summary (raise the
    error the run would raise otherwise)."""
    from importlib.metadata import version

    from auxdpo.train.run_arguments import data_source

    values, overrides = _read(path, tokens)
    on_gpu = _needs_bf16_gpu({**values, **overrides})  # use_cpu lifts only that check
    run_args, config = _resolve(path, values, overrides, {"use_cpu": True} if on_gpu else None)
    try:
        data = data_source(run_args)
    except (OSError, ValueError) as exc:  # about dataset_name: the file's, unless overridden
        where = None if "dataset_name" in overrides else path
        raise type(exc)(f"{where}: {exc}" if where else str(exc)) from None
    fmt = f", format {run_args.dataset_format}" if run_args.dataset_format else ""
    summary = (f"{path or 'config'}: OK: method {config.method}, capacity {config.capacity}, "
               f"model {_model_source(run_args.model_name_or_path)}, data {data} "
               f"(split {run_args.dataset_split}{fmt}); "
               f"transformers {version('transformers')}, trl {version('trl')}")
    return summary + ("; bf16 checked as on a GPU with bf16 (none here)" if on_gpu else "")
