"""RewardBench 2 rows: what a best-of-N row must hold, and how many pairs it makes.

Loading the fixture, pairs of both modes and the count and Ties-id checks are tested in
test_data_loaders.py.
"""

from __future__ import annotations

import pytest

from auxdpo.data.rewardbench2 import (
    count_rewardbench2_pairs,
    normalize_rewardbench2,
    rewardbench2_pairs,
)
from data_fixtures import rewardbench2_rows


def records(rows):
    return list(enumerate(rows, start=1))


def test_pair_counts_match_the_pairs_made():
    items, problems = normalize_rewardbench2(records(rewardbench2_rows()))
    assert problems == []
    # 1×3 + 1×3 + 1×2 + 3×2 every pair; one per row
    assert count_rewardbench2_pairs(items) == 14 == len(rewardbench2_pairs(items))
    assert count_rewardbench2_pairs(items, "one") == 4 == len(rewardbench2_pairs(items, "one"))
    for call in (count_rewardbench2_pairs, rewardbench2_pairs):
        with pytest.raises(ValueError, match="^mode must be 'all' or 'one', got 'every'$"):
            call(items, "every")


def test_row_problems_are_named_by_row_and_field():
    rows = rewardbench2_rows()
    rows[0]["rejected"] = ["No.", 3]
    del rows[1]["id"]
    rows[2]["subset"] = "ties"  # the Ties rule is not case-sensitive; its id is fine
    rows[3]["rejected"] = ["Red.", "Pink."]  # "Red." is also chosen
    rows[3]["num_incorrect"] = None  # a null count is not checked
    items, problems = normalize_rewardbench2(records(rows))
    assert [item["id"] for item in items] == ["ref:5"]
    assert [(str(p), p.kind) for p in problems] == [
        ("row 1, field 'rejected': every answer must be a string", "schema"),
        ("row 2, field 'id': missing", "schema"),
        ("row 4, field 'rejected': an answer appears in both chosen and rejected", "content")]
    rows = rewardbench2_rows()
    rows[0]["subset"] = "ties"
    _, problems = normalize_rewardbench2(records(rows[:1]))
    assert [str(p) for p in problems] == [
        "row 1, field 'id': Ties rows need an id 'ref:N' or 'tied:N', got '0'"]
