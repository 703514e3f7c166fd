"""``auxdpo data``: its arguments and exit codes (the checks' reports: test_data_check.py)."""

from __future__ import annotations

import json

import pytest

from auxdpo.cli import main
from data_fixtures import MULTI_FIXTURES


def test_data_without_an_action_prints_its_usage_and_exits_2(capsys):
    assert main(["data"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: auxdpo data [-h] ACTION") and "check" in out


@pytest.mark.parametrize("args, message", [
    (["x.jsonl"], "the following arguments are required: --format"),
    (["x.jsonl", "--format", "csv"], "argument --format: invalid choice: 'csv'"),
    (["x.jsonl", "--format", "rewardbench2", "--ties", "keep"],
     "argument --ties: invalid choice: 'keep'"),
])
def test_bad_arguments_exit_2_naming_the_option(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["data", "check", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_score_field_reaches_the_expansion(capsys):
    """openbmb fixture: fine-grained scores give 5 + 5 pairs, overall scores 6 + 5."""
    path = str(MULTI_FIXTURES["openbmb-ultrafeedback"])
    pairs = {}
    for field in ("fine-grained_score", "overall_score"):
        assert main(["data", "check", path, "--format", "openbmb-ultrafeedback",
                     "--score-field", field, "--json"]) == 0
        pairs[field] = json.loads(capsys.readouterr().out)["pairs"]
    assert pairs == {"fine-grained_score": 10, "overall_score": 11}
