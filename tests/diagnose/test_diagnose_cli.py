"""The text report of ``auxdpo diagnose`` and its argument errors."""

from __future__ import annotations

import pytest

from auxdpo.cli import main
from auxdpo.diagnose.cli import render

REPORT = {"pairs": 40, "prompts": 10, "pairs_in_data": 400, "unique_responses": 30,
          "pairs_per_response": 2.67, "shared_share": 0.8, "separable_share": 0.25,
          "components_per_prompt": 1.0, "score_rank": 12, "identified_directions": 20,
          "parameters": 512, "null_dim": 8, "predicted_gap": {"dpo": -1.4, "auxdpo": 0.9},
          "uncertainty": {"rounds": 20, "dpo_std": 0.3, "auxdpo_std": 0.05},
          "step_cosine": -0.6, "linearisation_error": 0.012, "score_shift": 0.004,
          "verdict": "auxdpo-helps", "reason": "DPO is predicted to reach -1.40 ..."}


def test_the_text_report_states_each_part():
    text = render(REPORT)
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("data: 40 pairs over 10 prompts (400 in the data)")
    assert "25% won or lost every comparison" in lines[0]
    assert "score rank 12 of 20 identified reward directions over 512" in lines[1]
    assert "null space 8" in lines[1]
    assert "DPO -1.40 ± 0.30, AuxDPO 0.90 ± 0.05" in lines[2]
    assert "misses 1.2% of the log-prob change" in lines[3]
    assert lines[4].startswith("verdict: auxdpo-helps")


def test_a_saturated_sketch_gives_bounds_and_its_share():
    report = dict(REPORT, scores={"method": "sketch", "size": 12, "power_iterations": 1,
                                  "passes": 3, "captured": 0.873, "saturated": True})
    line = render(report).splitlines()[1]
    assert "score rank ≥ 12 of 20" in line and "null space ≤ 8" in line
    assert "sketched to 12 directions, which hold 87.3% of their squared norm" in line
    whole = dict(report, scores=dict(report["scores"], saturated=False))
    assert "score rank 12 of 20" in render(whole).splitlines()[1]


def test_the_report_without_a_bootstrap_has_no_spread():
    report = dict(REPORT, uncertainty={"rounds": 0})
    assert "±" not in render(report)


def test_a_bad_max_pairs_is_one_line(capsys):
    assert main(["diagnose", "--config", "examples/tiny_auxdpo.yaml", "--max-pairs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-pairs must be >= 1" in err[0]


@pytest.mark.parametrize("flag, value, message", [
    ("--sketch", "some", "--sketch must be 'auto' or a whole number >= 0"),
    ("--sketch", "-3", "--sketch must be 'auto' or a whole number >= 0"),
    ("--power", "-1", "--power must be >= 0"),
])
def test_bad_sketch_settings_are_one_line(capsys, flag, value, message):
    assert main(["diagnose", "--config", "examples/tiny_auxdpo.yaml", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("argv", [["diagnose"], ["diagnose", "--json"]])
def test_the_config_is_required(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
