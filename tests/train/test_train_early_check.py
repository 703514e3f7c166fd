"""Errors in a second: unknown keys and methods are refused before torch, transformers and TRL
are imported, with the same names the full resolution knows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auxdpo.train import early_check
from auxdpo.train.config_check import unknown_method_message
from auxdpo.train.early_check import early_check as check
from auxdpo.train.early_check import recipe_names

ROOT = Path(__file__).resolve().parents[2]
PAPER = ("dpo", "ipo", "dpop", "auxdpo")


def test_names_read_from_the_sources_are_the_installed_ones():
    from auxdpo.losses import LOSSES, PAPER_METHODS
    from auxdpo.train.run import config_key_names

    names = recipe_names()
    assert names is not None
    assert names.keys == config_key_names()
    assert names.paper_methods == PAPER_METHODS == PAPER
    assert names.methods == tuple(LOSSES)


def test_an_unexpected_class_chain_falls_back_to_the_full_check(monkeypatch):
    chain = list(early_check.CONFIG_CHAIN)
    chain[1] = ("trl", "trainer/dpo_config.py", "KTOConfig")  # not AuxDPOConfig's base
    monkeypatch.setattr(early_check, "CONFIG_CHAIN", tuple(chain))
    assert recipe_names() is None
    assert check({"lerning_rate": 1}) is None  # no verdict: the full check decides


def test_unknown_method_lists_the_papers_methods_first_with_did_you_mean():
    from auxdpo.losses import LOSSES

    message = unknown_method_message("auxpdo", PAPER, LOSSES)
    assert message == ("method must be one of the paper's dpo, ipo, dpop, auxdpo, or one of "
                       "TRL's loss types: hinge, robust, exo_pair, nca_pair, bco_pair, "
                       "sppo_hard, apo_zero, apo_down, discopop, aot, aot_unpaired, "
                       "sigmoid_norm; got 'auxpdo' (did you mean auxdpo?)")
    assert check({"method": "auxpdo"}) == message
    assert unknown_method_message("sigmoid", PAPER, LOSSES).endswith(
        "(TRL's loss_type sigmoid is method dpo)")
    assert "did you mean" not in unknown_method_message("zzz", PAPER, LOSSES)
    assert check({"method": "hinge", "learning_rate": 1.0}) is None


def test_the_config_refuses_an_unknown_method_with_the_same_line():
    from auxdpo.train.config import AuxDPOConfig

    with pytest.raises(ValueError) as info:
        AuxDPOConfig(output_dir="unused", method="auxpdo")
    assert str(info.value) == check({"method": "auxpdo"})


@pytest.mark.parametrize("extra, error", [
    (["--lerning_rate", "1"], "unknown config key(s): lerning_rate (did you mean "
                              "learning_rate?)"),
    (["--method", "auxpdo"], "got 'auxpdo' (did you mean auxdpo?)"),
], ids=["typo-key", "typo-method"])
def test_cli_errors_come_before_the_heavy_imports(tmp_path, extra, error):
    """The command as a user runs it, in a fresh interpreter: one line, exit 2, and torch,
    transformers and TRL never imported (measured: docs/trainer.md, "Errors in a second")."""
    probe = ("import sys\nfrom auxdpo.cli import main\ncode = main(sys.argv[1:])\n"
             "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]\n"
             "print('heavy:', heavy, file=sys.stderr)\nsys.exit(code)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, "train", "--config",
                           str(ROOT / "examples" / "tiny_auxdpo.yaml"), *extra],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[0].startswith("auxdpo train: error: ") and error in lines[0]
    assert lines[1] == "heavy: []"
    assert seconds < 30  # a loose bound for a busy machine; the point is the imports above
