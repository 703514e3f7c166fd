"""RewardBench 2 official scoring on hand-made scores: best-of-N ties, the Ties subset, the mean."""

import math

import numpy as np
import pytest

from auxdpo.harness.evaluation.rewardbench2 import (
    rewardbench2_prompt_score,
    rewardbench2_scores,
    rewardbench2_ties_score,
)


@pytest.mark.parametrize("chosen, rejected, expected", [
    ([5.0], [1.0, 2.0, 3.0], 1.0),        # alone on top
    ([2.0], [2.0, 2.0, 1.0], 1 / 3),      # three-way tie for the top
    ([2.0], [2.0, 0.0, 1.0], 1 / 2),      # two-way tie
    ([2.0], [3.0, 0.0, 1.0], 0.0),        # outscored
    ([2.0], [2.5, 2.0, 2.0], 0.0),        # tie below the top still scores 0
    ([2.0, 2.0], [1.0], 1 / 2),           # several chosen: the first is judged, all count in k
    ([1.0, 2.0], [0.0], 0.0),
])
def test_rewardbench2_prompt_score(chosen, rejected, expected):
    # Exact: the score is a ratio of small counts, as is each expected value.
    assert rewardbench2_prompt_score(chosen, rejected) == pytest.approx(expected, abs=0)


def _ties_rows():
    return [
        # N=1: ref gap 3−2=1 (accurate); tied spread 5−4=1, gap 4−3.5=0.5 (accurate)
        {"id": "ref:1", "chosen_scores": [3.0], "rejected_scores": [1.0, 2.0]},
        {"id": "tied:1", "chosen_scores": [5.0, 4.0, 4.5], "rejected_scores": [2.0, 3.5]},
        # N=2: ref gap 1−2=−1 (wrong); tied spread 4, gap 2−1=1 (accurate)
        {"id": "ref:2", "chosen_scores": [1.0], "rejected_scores": [2.0, 0.0]},
        {"id": "tied:2", "chosen_scores": [6.0, 2.0], "rejected_scores": [1.0, 0.0]},
        # N=3: ref gap 0.05; tied spread 0.1, gap 3.9 → preferred, but min(0.05, 3.9) < 0.1
        {"id": "ref:3", "chosen_scores": [2.0], "rejected_scores": [1.95]},
        {"id": "tied:3", "chosen_scores": [5.0, 4.9], "rejected_scores": [1.0]},
    ]


def test_ties_rule_hand_computed():
    parts = rewardbench2_ties_score(_ties_rows())
    margin = (math.tanh(0.5 / 1 - 1) + math.tanh(-1 / 4 - 1) + math.tanh(0.05 / 0.1 - 1)) / 3
    assert parts["tied_accuracy"] == 1.0
    assert parts["ref_accuracy"] == pytest.approx(2 / 3)
    assert parts["correctness_preferred"] == pytest.approx(1 / 3)
    assert parts["correctness_preferred_hard"] == 0.0
    assert parts["correctness_margin_score"] == pytest.approx(margin, rel=1e-12)
    assert parts["score"] == pytest.approx(0.3 + 0.3 * 2 / 3 + 0.2 / 3 + 0.01 * margin,
                                           rel=1e-12)


def test_ties_rule_zero_spread_gives_full_margin_term():
    # tied answers scored equally (spread 0) and above every wrong one: tanh(+inf) = 1,
    # so the score reaches 0.3 + 0.3 + 0.2 + 0.2 + 0.01 = 1.01, as the official code does.
    rows = [{"id": "ref:7", "chosen_scores": [3.0], "rejected_scores": [0.0]},
            {"id": "tied:7", "chosen_scores": [2.0, 2.0], "rejected_scores": [1.0]}]
    assert rewardbench2_ties_score(rows)["score"] == pytest.approx(1.01, abs=1e-12)


def test_ties_rule_rejects_malformed_rows():
    with pytest.raises(ValueError, match="'ref:N' or 'tied:N'"):
        rewardbench2_ties_score([{"id": "7", "chosen_scores": [1], "rejected_scores": [0]}])
    with pytest.raises(ValueError, match="at least two chosen"):
        rewardbench2_ties_score([
            {"id": "ref:1", "chosen_scores": [1], "rejected_scores": [0]},
            {"id": "tied:1", "chosen_scores": [1], "rejected_scores": [0]}])


def test_rewardbench2_scores_per_subset_and_unweighted_mean():
    rows = [
        {"id": "0", "subset": "Factuality", "chosen_scores": [5.0], "rejected_scores": [1, 2, 3]},
        {"id": "1", "subset": "Factuality", "chosen_scores": np.array([2.0]),
         "rejected_scores": np.array([2.0, 2.0, 1.0])},
        {"id": "2", "subset": "Math", "chosen_scores": [0.0], "rejected_scores": [1, -1, -2]},
    ] + [dict(row, subset="Ties") for row in _ties_rows()]
    result = rewardbench2_scores(rows)
    ties = rewardbench2_ties_score(_ties_rows())["score"]
    assert result["subsets"]["Factuality"] == pytest.approx(2 / 3)
    assert result["subsets"]["Math"] == 0.0
    assert result["subsets"]["Ties"] == pytest.approx(ties)
    assert result["counts"] == {"Factuality": 2, "Math": 1, "Ties": 6}
    # unweighted: Factuality's two prompts count as much as Math's one
    assert result["mean"] == pytest.approx((2 / 3 + 0.0 + ties) / 3)
