"""Metrics on hand-made scores: pairwise accuracies, RewardBench 2 (ties, Ties subset), MMLU-Pro."""

import math

import numpy as np
import pytest
import torch

from auxdpo.evaluate import (
    extract_answer_letter,
    implicit_reward_accuracy,
    mmlu_pro_generation_accuracy,
    mmlu_pro_option_accuracy,
    pairwise_accuracy,
    pairwise_metrics,
    rewardbench2_prompt_score,
    rewardbench2_scores,
    rewardbench2_ties_score,
    top_choice_credit,
)

# ------------------------------------------------------------------ pairwise


def test_pairwise_accuracy_is_strict():
    # 1>0 yes, 2>2 no (tie), 3>4 no, 0>-1 yes → 2/4
    assert pairwise_accuracy([1, 2, 3, 0], [0, 2, 4, -1]) == 0.5


def test_logp_and_implicit_reward_accuracies_differ_when_the_reference_prefers():
    # pair 1: policy −5 vs −1 (log-prob says rejected), reference −10 vs −1:
    #   implicit rewards β·(−5+10)=5β vs β·(−1+1)=0 → chosen.
    # pair 2: policy −1 vs −3, reference −1 vs −4: log-prob → chosen; rewards 0 vs β → rejected.
    pc, pr = torch.tensor([-5.0, -1.0]), torch.tensor([-1.0, -3.0])
    rc, rr = torch.tensor([-10.0, -1.0]), torch.tensor([-1.0, -4.0])
    assert pairwise_accuracy(pc, pr) == 0.5
    assert implicit_reward_accuracy(pc, pr, rc, rr, beta=0.1) == 0.5
    metrics = pairwise_metrics(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.1)
    assert metrics == {"n_pairs": 1, "logp_accuracy": 0.0, "implicit_reward_accuracy": 1.0,
                       "reference_logp_accuracy": 0.0}


def test_pairwise_bad_input():
    with pytest.raises(ValueError, match="lengths differ"):
        pairwise_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="beta must be positive"):
        implicit_reward_accuracy([0], [0], [0], [0], beta=0)
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy([], [])


# ------------------------------------------------------------------ RewardBench 2


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


# ------------------------------------------------------------------ MMLU-Pro


def test_top_choice_credit():
    assert top_choice_credit([-1.0, -2.0, -3.0], 0) == 1.0
    assert top_choice_credit([-1.0, -1.0, -5.0], 1) == 0.5
    assert top_choice_credit([-1.0, -1.0, -5.0], 2) == 0.0


def test_mmlu_option_accuracy_per_subject():
    option_logps = [[-1, -2, -3], [-1, -1, -5, -6], list(np.arange(0, -10, -1.0))]
    result = mmlu_pro_option_accuracy(option_logps, [0, 1, 3], ["math", "math", "law"])
    # credits 1, 1/2 (two-way tie), 0 → math 0.75, law 0, overall (micro) 0.5
    assert result == {"overall": 0.5, "per_category": {"law": 0.0, "math": 0.75},
                      "counts": {"law": 1, "math": 2}}


@pytest.mark.parametrize("text, n_options, letter", [
    ("Let's think. The answer is (C).", 10, "C"),
    ("so the answer is D because", 10, "D"),
    ("The answer is (C). Actually the answer is (B).", 10, "C"),  # first "answer is"
    ("Reasoning...\nAnswer: B\nmore text", 10, "B"),
    ("Answer: A ... final Answer: (E)", 10, "E"),                  # last "Answer:"
    ("I would pick G or maybe H", 10, "H"),                        # last standalone letter
    ("I would pick G or maybe H", 4, None),                        # outside A-D
    ("Between A and B, B.", 4, "B"),
    ("no letter here", 10, None),
    ("The answer is (K)", 10, None),
])
def test_extract_answer_letter(text, n_options, letter):
    assert extract_answer_letter(text, n_options) == letter


def test_generation_accuracy_counts_unparsed_as_wrong():
    result = mmlu_pro_generation_accuracy(
        ["The answer is (B)", "Answer: C", "no idea"], [1, 0, 2], ["math", "law", "law"])
    assert result["overall"] == pytest.approx(1 / 3)
    assert result["per_category"] == {"law": 0.0, "math": 1.0}
    assert result["unparsed"] == 1
