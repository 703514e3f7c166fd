"""The ID setting: rows split by prompt first, then pairs per side with one pair mode.

That no prompt is on both sides, the pair counts of both kinds and an unknown kind are tested
in test_data_splits.py.
"""

from __future__ import annotations

import datasets

from auxdpo.data.id_setting import IDSets, id_sets
from auxdpo.data.mmlu_pro import mmlu_pro_pairs
from auxdpo.data.rewardbench2 import rewardbench2_pairs
from auxdpo.data.splits import split_by_prompt


def best_of_n(n=20):
    return datasets.Dataset.from_list([
        {"id": str(i), "prompt": f"p{i % 10}", "chosen": [f"c{i}", f"d{i}"],
         "rejected": [f"r{i}a", f"r{i}b", f"r{i}c"], "subset": "Math", "num_correct": 2}
        for i in range(n)])


def test_the_sides_are_the_split_rows_paired_with_the_split_seed():
    rows = best_of_n()
    sets = id_sets("rewardbench2", rows, seed=5, test_fraction=0.3)
    assert isinstance(sets, IDSets)
    train_rows, test_rows = split_by_prompt(rows, test_fraction=0.3, seed=5)
    assert sets.test_rows.to_list() == test_rows.to_list()
    assert sets.train_pairs.to_list() == rewardbench2_pairs(train_rows, "all", 5).to_list()
    assert len(sets.test_pairs) == 3 * 2 * 2 * 3  # 3 prompts × 2 rows × 2 chosen × 3 rejected


def test_the_pair_mode_applies_to_both_sides():
    sets = id_sets("rewardbench2", best_of_n(), seed=1, pair_mode="one")
    assert (len(sets.train_pairs), len(sets.test_pairs)) == (16, 4)  # one pair per row
    questions = datasets.Dataset.from_list([
        {"id": str(i), "question": f"q{i}", "options": ["a", "b", "c", "d"],
         "answer_index": i % 4, "category": "math"} for i in range(10)])
    every = id_sets("mmlu-pro", questions, seed=2, pair_mode="all")
    assert (len(every.train_pairs), len(every.test_pairs)) == (8 * 3, 2 * 3)
    assert every.test_pairs.to_list() == mmlu_pro_pairs(every.test_rows, "all", 2).to_list()
