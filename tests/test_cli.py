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


_NOISY_COMMAND = """
import sys
from auxdpo import cli

def noisy(args):
    for i in range(200000):
        print("line", i)

class Parsed:
    command, func = "noisy", staticmethod(noisy)

cli.build_parser = lambda: type("Parser", (), {"parse_args": lambda self, argv: Parsed()})()
sys.exit(cli.main([]))
"""


def _first_line_then_close(command, env):
    import subprocess

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    code = proc.wait(timeout=300)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return first, code, err


def test_closed_pipe_stops_quietly():
    """A command whose output is cut by `| head -1`: no BrokenPipeError traceback, and
    SIGPIPE's exit code (200k lines: far more than a pipe buffer holds)."""
    import os
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    first, code, err = _first_line_then_close([sys.executable, "-c", _NOISY_COMMAND], env)
    assert first == b"line 0\n"
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141


@pytest.mark.slow
def test_protocol_dry_run_into_head(tmp_path):
    """The real case: `auxdpo protocol run --dry-run | head -1` (slow: loads TRL)."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    recipe = (root / "examples" / "protocol" / "llama3.1-8b.yaml").read_text()
    assert "  seeds: 3\n" in recipe
    big = tmp_path / "big.yaml"  # ~6400 grid lines, ~400 kB: more than a pipe buffer holds
    big.write_text(recipe.replace("  seeds: 3\n", "  seeds: 100\n"))
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    first, code, err = _first_line_then_close(
        [sys.executable, "-m", "auxdpo", "protocol", "run", "--recipe", str(big), "--out",
         str(tmp_path / "out"), "--dry-run"], env)
    assert first.startswith(b"recipe: llama3.1-8b")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141
