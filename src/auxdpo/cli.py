"""The ``auxdpo`` command: one entry point, one subcommand per area.

Each area keeps its own ``cli.py`` with ``register(subparsers)``, which adds its subcommand and
sets ``func`` on the parsed namespace. Registration must be cheap (no torch/transformers
imports at module top): heavy imports happen inside the handlers, so ``auxdpo --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings

__all__ = ["build_parser", "main"]

# Areas in the order `auxdpo --help` lists them. A module that does not exist yet is skipped;
# one that exists but fails to import is an error (never hidden).
COMMAND_MODULES = (
    "auxdpo.harness.lab.cli",
    "auxdpo.train.cli",
    "auxdpo.diagnose.cli",
    "auxdpo.data.cli",
    "auxdpo.harness.evaluation.cli",
    "auxdpo.harness.protocol.cli",
    "auxdpo.harness.oracle.cli",
    "auxdpo.harness.oracle.grid.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from auxdpo import __version__

    parser = argparse.ArgumentParser(
        prog="auxdpo",
        description="Preference optimization that fixes DPO's misspecification (AuxDPO), "
                    "with exact solvers and the paper's evaluation protocol.")
    parser.add_argument("--version", action="version", version=f"auxdpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) is None:
            continue
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from auxdpo.errors import user_error_message

    formatted = warnings.formatwarning
    warnings.formatwarning = _own_warnings_as_lines(args.command, formatted)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:  # `auxdpo ... | head` closed the pipe: stop quietly
        return _closed_pipe()
    except Exception as exc:  # expected failures: one clear line, no traceback (errors.py)
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"auxdpo {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatted


def _own_warnings_as_lines(command: str, format_other):
    """``warnings.formatwarning`` for the command: auxdpo's own warnings (raised from its
    modules) as one line ``auxdpo <command>: warning: ...``; the libraries' as Python shows
    them (file, line, category). Only the printed form changes: recorded warnings
    (``catch_warnings(record=True)``, pytest) are untouched."""
    import os

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def format_warning(message, category, filename, lineno, line=None):
        if os.path.abspath(filename).startswith(package):
            return f"auxdpo {command}: warning: {message}\n"
        return format_other(message, category, filename, lineno, line)

    return format_warning


def _closed_pipe() -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again, and exit
    as a program killed by SIGPIPE would (128 + 13), like ``seq 1 99999 | head``."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
