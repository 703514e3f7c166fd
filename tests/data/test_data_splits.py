"""The ID split: 80/20 by prompt, no prompt on both sides, stable under the seed and row order."""

import datasets
import pytest

from auxdpo.data.splits import assign_test_keys, split_by_prompt, split_mask


def _pairs(n_prompts=50, per_prompt=3):
    rows = [{"prompt": f"prompt {p}", "chosen": f"good {p}.{k}", "rejected": f"bad {p}.{k}"}
            for p in range(n_prompts) for k in range(1 + p % per_prompt)]
    return datasets.Dataset.from_list(rows)


def test_exactly_twenty_percent_of_prompts_and_no_prompt_on_both_sides():
    ds = _pairs()
    train, test = split_by_prompt(ds, test_fraction=0.2, seed=1)
    train_prompts, test_prompts = set(train["prompt"]), set(test["prompt"])
    assert not train_prompts & test_prompts
    assert len(test_prompts) == 10 and len(train_prompts) == 40  # round(0.2 · 50)
    assert len(train) + len(test) == len(ds)
    # every pair of a test prompt went to test
    assert len(test) == sum(1 for p in ds["prompt"] if p in test_prompts)


def test_stable_under_seed_and_row_order_and_changes_with_seed():
    ds = _pairs()
    first = split_by_prompt(ds, seed=7)[1]["prompt"]
    again = split_by_prompt(ds, seed=7)[1]["prompt"]
    shuffled = split_by_prompt(ds.shuffle(seed=123), seed=7)[1]["prompt"]
    assert first == again
    assert set(shuffled) == set(first)
    assert set(split_by_prompt(ds, seed=8)[1]["prompt"]) != set(first)


def test_keys_hand_made_case():
    keys = ["a", "b", "a", "c", "d", "b", "e"]
    test_keys = assign_test_keys(keys, test_fraction=0.4, seed=0)
    assert len(test_keys) == 2  # round(0.4 · 5 distinct keys)
    mask = split_mask(keys, 0.4, 0)
    assert [k for k, m in zip(keys, mask) if m] == [k for k in keys if k in test_keys]
    assert len(assign_test_keys([str(i) for i in range(8)], 0.2, 0)) == 2  # round(1.6), not 1


def test_question_column_is_the_default_key():
    rows = [{"question": "Q", "prompt": f"Q with options {i}", "chosen": "x", "rejected": "y"}
            for i in range(4)] + [{"question": f"R{i}", "prompt": f"R{i}", "chosen": "x",
                                   "rejected": "y"} for i in range(6)]
    train, test = split_by_prompt(datasets.Dataset.from_list(rows), test_fraction=0.5, seed=2)
    assert ("Q" in train["question"]) != ("Q" in test["question"])  # all four on one side


def test_bad_fraction_and_key():
    ds = _pairs(5)
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_prompt(ds, test_fraction=1.0)
    with pytest.raises(ValueError, match="split key 'nope' is not a column"):
        split_by_prompt(ds, key="nope")


def test_id_sets_split_rows_before_making_pairs():
    from auxdpo.data import id_sets

    rows = datasets.Dataset.from_list([
        {"id": str(i), "prompt": f"p{i % 7}", "chosen": [f"c{i}"],
         "rejected": [f"r{i}a", f"r{i}b", f"r{i}c"], "subset": "Math", "num_correct": 1}
        for i in range(20)])
    sets = id_sets("rewardbench2", rows, seed=4)
    assert not set(sets.train_pairs["prompt"]) & set(sets.test_pairs["prompt"])
    assert set(sets.test_pairs["prompt"]) == set(sets.test_rows["prompt"])
    assert len(set(sets.test_rows["prompt"])) == 1  # round(0.2 · 7 prompts)
    assert len(sets.train_pairs) + len(sets.test_pairs) == 20 * 3  # mode "all": 1 × 3 each
    mmlu = datasets.Dataset.from_list([
        {"id": str(i), "question": f"q{i}", "options": ["a", "b", "c"], "answer_index": i % 3,
         "category": "math"} for i in range(10)])
    sets = id_sets("mmlu-pro", mmlu, seed=1)
    assert (len(sets.train_pairs), len(sets.test_pairs), len(sets.test_rows)) == (8, 2, 2)
    with pytest.raises(ValueError, match="kind must be one of"):
        id_sets("ultrafeedback", mmlu)
