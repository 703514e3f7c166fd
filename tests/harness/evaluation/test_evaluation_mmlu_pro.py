"""MMLU-Pro accuracy on hand-made scores: fair ties, per subject, answer-letter extraction."""


import numpy as np
import pytest

from auxdpo.harness.evaluation.mmlu_pro import (
    extract_answer_letter,
    mmlu_pro_generation_accuracy,
    mmlu_pro_option_accuracy,
    top_choice_credit,
)


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
