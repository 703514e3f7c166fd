"""The paper's ID setting in one call: split rows 80/20 by prompt, then make pairs per side.

RewardBench 2 and MMLU-Pro are split *before* pairs are made (best-of-N rows or questions,
grouped by prompt / question text, :func:`auxdpo.data.splits.split_by_prompt`), so every pair
of a held-out prompt is held out too. Both sides are expanded with the same pair mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auxdpo.data.mmlu_pro import mmlu_pro_pairs
from auxdpo.data.rewardbench2 import rewardbench2_pairs
from auxdpo.data.splits import split_by_prompt

__all__ = ["IDSets", "id_sets"]

_PAIRS = {"rewardbench2": (rewardbench2_pairs, "all"), "mmlu-pro": (mmlu_pro_pairs, "sample")}


@dataclass(frozen=True)
class IDSets:
    """Train pairs, held-out pairs (pairwise accuracy) and held-out rows (best-of-N scoring
    for RewardBench 2, option log-likelihood for MMLU-Pro)."""

    train_pairs: Any
    test_pairs: Any
    test_rows: Any


def id_sets(kind: str, rows, *, seed: int = 0, test_fraction: float = 0.2,
            pair_mode: str | None = None) -> IDSets:
    """Split ``rows`` (from ``load_rewardbench2`` or ``load_mmlu_pro``) and make pairs.

    ``kind``: ``"rewardbench2"`` (default pair mode ``"all"``) or ``"mmlu-pro"`` (``"sample"``);
    the pair seed is the split seed.
    """
    if kind not in _PAIRS:
        raise ValueError(f"kind must be one of {sorted(_PAIRS)}, got {kind!r}")
    make_pairs, default_mode = _PAIRS[kind]
    mode = pair_mode or default_mode
    train_rows, test_rows = split_by_prompt(rows, test_fraction=test_fraction, seed=seed)
    return IDSets(make_pairs(train_rows, mode=mode, seed=seed),
                  make_pairs(test_rows, mode=mode, seed=seed), test_rows)
