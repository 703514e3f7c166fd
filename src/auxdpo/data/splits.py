"""The ID setting's 80/20 split, by prompt, reproducible from a seed.

Rows are grouped by a key (the prompt, or the MMLU-Pro question text) so that no prompt lands
on both sides. Each distinct key gets a rank from ``sha256(f"{seed}\\0{key}")``; the
``round(test_fraction * n_keys)`` lowest-ranked keys form the test side. Consequences:

* the split depends only on the seed and the set of keys, not on row order, and a key keeps
  its side when rows are shuffled or duplicated;
* the test side holds exactly ``round(test_fraction * n_keys)`` prompts (its share of *rows*
  differs from ``test_fraction`` when prompts have different numbers of pairs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["assign_test_keys", "split_mask", "split_by_prompt"]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()


def assign_test_keys(keys: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> set[str]:
    """The distinct keys that go to the test side."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    distinct = sorted(set(keys), key=lambda key: _rank(seed, key))
    return set(distinct[:round(test_fraction * len(distinct))])


def split_mask(keys: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> list[bool]:
    """Per row: True when the row's key is on the test side."""
    test_keys = assign_test_keys(keys, test_fraction, seed)
    return [key in test_keys for key in keys]


def split_by_prompt(dataset, test_fraction: float = 0.2, seed: int = 0, key: str | None = None):
    """Split a ``datasets.Dataset`` into ``(train, test)`` with no key on both sides.

    ``key`` defaults to ``"question"`` when that column exists (MMLU-Pro pairs: the same
    question text can recur with different option lists), else ``"prompt"``.
    """
    if key is None:
        key = "question" if "question" in dataset.column_names else "prompt"
    if key not in dataset.column_names:
        raise ValueError(f"split key {key!r} is not a column (columns: {dataset.column_names})")
    mask = split_mask([str(value) for value in dataset[key]], test_fraction, seed)
    train_rows = [index for index, is_test in enumerate(mask) if not is_test]
    test_rows = [index for index, is_test in enumerate(mask) if is_test]
    return dataset.select(train_rows), dataset.select(test_rows)
