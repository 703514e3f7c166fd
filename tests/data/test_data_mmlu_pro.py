"""MMLU-Pro questions: the answer from a letter or an index, usable rejected options.

Loading the fixture, the prompt format, pairs of both modes and schema errors are tested in
test_data_loaders.py.
"""

from __future__ import annotations

import pytest

from auxdpo.data.mmlu_pro import (
    format_mmlu_prompt,
    incorrect_options,
    mmlu_pro_pairs,
    normalize_mmlu_pro,
)


def question(**changes):
    row = {"question_id": 9, "question": "2+2?", "options": ["3", "4", "5"], "category": "math"}
    return {**row, **changes}


@pytest.mark.parametrize("options, answer, expected", [
    (["a", "b", "c"], 1, [0, 2]),
    (["a", " b ", "b", "c", "a", ""], 1, [0, 3]),  # the answer's text, repeats, blanks: out
    (["x", "x", "x"], 0, []),
])
def test_incorrect_options(options, answer, expected):
    assert incorrect_options(options, answer) == expected


def test_the_answer_comes_from_a_letter_an_index_or_both():
    rows = [(1, question(answer=" C ")), (2, question(answer_index=0)),
            (3, question(answer="B", answer_index=1)), (4, question(answer_index=True)),
            (5, question(answer="D")), (6, question(answer_index=1, question_id=None)),
            (7, question(answer="A", options=["4", "4 ", "4"])),
            (8, question(answer="A", options=[" ", "1", "2"]))]
    items, problems = normalize_mmlu_pro(rows)
    assert [(item["id"], item["answer_index"]) for item in items] == [("9", 2), ("9", 0),
                                                                      ("9", 1)]
    assert [(str(p), p.kind) for p in problems] == [
        ("row 4, field 'answer_index': expected an int, got True", "schema"),
        ("row 5, field 'answer': points past the 3 options", "schema"),
        ("row 6, field 'question_id': missing", "schema"),
        ("row 7, field 'options': no incorrect option differs from the correct one", "content"),
        ("row 8, field 'options': the correct option is empty", "content")]


def test_pairs_ids_and_prompts():
    items, _ = normalize_mmlu_pro([(1, question(answer_index=1))])
    pairs = mmlu_pro_pairs(items, mode="all")
    assert pairs["id"] == ["9/A", "9/C"] and pairs["rejected"] == ["3", "5"]
    assert set(pairs["prompt"]) == {format_mmlu_prompt("2+2?", ["3", "4", "5"])}
    with pytest.raises(ValueError, match="^mode must be 'sample' or 'all', got 'one'$"):
        mmlu_pro_pairs(items, mode="one")
