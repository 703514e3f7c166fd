"""The ``auxdpo lab`` CLI: JSON shapes and one-line errors."""

import json

import pytest
import torch

from auxdpo.cli import main
from auxdpo.harness.lab.experiments import (
    GAP_METHODS,
    PROP2_METHODS,
)

D64 = torch.float64


def test_cli_prop2_json_shape(capsys):
    assert main(["lab", "prop2", "--beta", "10", "--counts", "1,1,100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"theta", "reward", "failures"}
    for key in out:
        assert list(out[key]) == list(PROP2_METHODS)
    assert out["failures"]["dpo"] == ["prefers_second_best", "best_prob_below_base",
                                      "reward_below_base"]
    assert out["theta"]["auxdpo"] == pytest.approx(-0.05, abs=1e-9)


def test_cli_loglinear_json_shapes(capsys):
    args = ["lab", "loglinear", "--beta", "10", "--skew", "1", "--seeds", "1", "--states", "2",
            "--actions", "4", "--dim", "2", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["gap_closed"]
    assert list(out["gap_closed"]) == list(GAP_METHODS)
    assert set(out["gap_closed"]["dpo"]) == {"mean", "min", "max"}
    args[5] = "0,1"
    assert main(args) == 0
    multi = json.loads(capsys.readouterr().out)
    assert [(r["beta"], r["skew"]) for r in multi["results"]] == [(10.0, 0.0), (10.0, 1.0)]


@pytest.mark.parametrize("argv, message", [
    (["lab", "prop2", "--beta", "0"], "--beta must be > 0"),
    (["lab", "prop2", "--beta", "nan"], "finite"),
    (["lab", "prop2", "--counts", "1,-1,1"], "non-negative"),
    (["lab", "prop2", "--counts", "1,1"], "three numbers"),
    (["lab", "prop2", "--dpop-lambda", "-1"], "dpop-lambda"),
    (["lab", "loglinear", "--skew", "-1"], "--skew must be >= 0"),
    (["lab", "loglinear", "--seeds", "0"], "--seeds must be >= 1"),
    (["lab", "sensitivity", "--resolution", "2"], "--resolution"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
