"""Expected failures and how the ``auxdpo`` command prints them.

Bad input, a busy output folder or a diverged run is not a bug: the command prints one line
``auxdpo <command>: error: <what, where>`` and exits with code 2 (:func:`user_error_message`
says which exceptions qualify and words them). Anything else keeps its traceback.
"""

from __future__ import annotations

import pickle
import sys

__all__ = ["AuxdpoError", "user_error_message"]


class AuxdpoError(Exception):
    """An expected failure whose message says everything (printed without a traceback)."""


def _yaml_message(exc) -> str:
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return f"invalid YAML: {problem}"
    where = "" if mark.name in (None, "<unicode string>", "<file>") else f"{mark.name}: "
    return f"{where}invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for a bug (keep the traceback).

    Expected: :class:`AuxdpoError`, ValueError (bad values, bad JSON, invalid UTF-8), OSError
    (missing files, a file where a folder belongs, permissions), YAML errors, and pickles
    refused by ``torch.load(weights_only=True)``.
    """
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        message = _yaml_message(exc)
    elif isinstance(exc, pickle.UnpicklingError):
        message = "refused to load a pickled file: " + (str(exc).strip().splitlines() or [""])[0]
    elif isinstance(exc, (AuxdpoError, ValueError, OSError)):
        message = str(exc)
    else:
        return None
    return " ".join(message.split()) or type(exc).__name__
