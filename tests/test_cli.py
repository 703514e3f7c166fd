"""The entry point: every subcommand answers --help, and --help stays light (no torch import)."""

import subprocess
import sys

import pytest

from auxdpo.cli import build_parser, main


def _subcommands(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return {}


def _walk(parser, prefix=()):
    yield prefix
    for name, sub in _subcommands(parser).items():
        yield from _walk(sub, prefix + (name,))


def test_every_subcommand_has_help(capsys):
    paths = list(_walk(build_parser()))
    assert ("lab",) in paths, paths
    for path in paths:
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0, path
        assert "usage: auxdpo" in capsys.readouterr().out


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from auxdpo.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'matplotlib') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
