"""RewardBench 2 official scoring, as pure functions of scores (no model calls).

Best-of-N per prompt (1/k on a k-way tie for the top), the Ties subset's own weighted rule,
per-subset scores and their unweighted mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from auxdpo.harness.evaluation.metrics import as_vector

__all__ = ["rewardbench2_prompt_score", "rewardbench2_ties_score", "rewardbench2_scores"]


def rewardbench2_prompt_score(chosen_scores: Any, rejected_scores: Any) -> float:
    """One non-Ties prompt, the official rule: 1/k when the (first) chosen answer ties k ways
    for the top score (1 when it is alone on top), 0 when any answer outscores it.

    Non-Ties rows have one chosen answer; with several, only the first is judged and the
    others count among the k, as in the official ``reroll_and_score_dataset``.
    """
    chosen = as_vector(chosen_scores, "chosen_scores")
    rejected = as_vector(rejected_scores, "rejected_scores")
    if len(chosen) == 0 or len(rejected) == 0:
        raise ValueError("a prompt needs at least one chosen and one rejected score")
    scores = np.concatenate([chosen, rejected])
    top = scores.max()
    return 1.0 / int(np.sum(scores == top)) if chosen[0] == top else 0.0


def _ties_prompt_stats(chosen: np.ndarray, rejected: np.ndarray) -> tuple[bool, float, float]:
    """(every correct beats every incorrect, spread among correct, worst correct − best wrong)."""
    spread = float(chosen.max() - chosen.min()) if len(chosen) > 1 else float("nan")
    gap = float(chosen.min() - rejected.max())
    return gap > 0, spread, gap


def rewardbench2_ties_score(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The official Ties score (RewardBench 2 code, ``process_single_model``).

    ``rows``: dicts with ``id`` (``"ref:N"``: a reference prompt with one correct answer;
    ``"tied:N"``: the same question N with several equally correct answers),
    ``chosen_scores`` and ``rejected_scores``. Per prompt: accurate = min(correct) > max(wrong);
    gap = min(correct) − max(wrong); spread = max(correct) − min(correct). Then

        score = 0.30·acc(tied) + 0.30·acc(ref) + 0.20·mean_N[gap_tied > spread_tied]
              + 0.20·mean_N[min(gap_ref, gap_tied) > spread_tied]
              + 0.01·mean_N[tanh(min(gap_ref, gap_tied) / spread_tied − 1)]   (nan → 0)

    the last three over the N that have both a ref and a tied row. Returns the components and
    ``"score"``.
    """
    stats: dict[str, dict[int, tuple[bool, float, float]]] = {"ref": {}, "tied": {}}
    for row in rows:
        kind, _, number = str(row["id"]).partition(":")
        if kind not in stats or not number.isdigit():
            raise ValueError(f"Ties row id must be 'ref:N' or 'tied:N', got {row['id']!r}")
        chosen = as_vector(row["chosen_scores"], "chosen_scores")
        rejected = as_vector(row["rejected_scores"], "rejected_scores")
        if len(chosen) == 0 or len(rejected) == 0:
            raise ValueError(f"Ties row {row['id']!r} needs chosen and rejected scores")
        stats[kind][int(number)] = _ties_prompt_stats(chosen, rejected)
    common = sorted(set(stats["ref"]) & set(stats["tied"]))
    if not common:
        raise ValueError("Ties scoring needs a 'ref:N' and a 'tied:N' row for some N")
    spread = np.array([stats["tied"][n][1] for n in common])
    if np.isnan(spread).any():
        raise ValueError("every 'tied:N' row needs at least two chosen (correct) answers")
    gap_tied = np.array([stats["tied"][n][2] for n in common])
    gap_hard = np.minimum(np.array([stats["ref"][n][2] for n in common]), gap_tied)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.nan_to_num(np.tanh(gap_hard / spread - 1.0), nan=0.0)
    parts = {
        "tied_accuracy": float(np.mean([s[0] for s in stats["tied"].values()])),
        "ref_accuracy": float(np.mean([s[0] for s in stats["ref"].values()])),
        "correctness_preferred": float(np.mean(gap_tied > spread)),
        "correctness_preferred_hard": float(np.mean(gap_hard > spread)),
        "correctness_margin_score": float(np.mean(margin)),
    }
    parts["score"] = (0.30 * parts["tied_accuracy"] + 0.30 * parts["ref_accuracy"]
                      + 0.20 * parts["correctness_preferred"]
                      + 0.20 * parts["correctness_preferred_hard"]
                      + 0.01 * parts["correctness_margin_score"])
    return parts


def rewardbench2_scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Score a scored best-of-N set: ``rows`` carry ``id``, ``subset``, ``chosen_scores``,
    ``rejected_scores`` (e.g. summed log-probs or implicit rewards of every answer).

    Returns ``{"subsets": {name: score}, "counts": {name: prompts}, "mean": float}``: non-Ties
    subsets average :func:`rewardbench2_prompt_score`; Ties (matched case-insensitively) uses
    :func:`rewardbench2_ties_score`; ``mean`` is the unweighted mean over the subsets present
    (the leaderboard number when all six are).
    """
    by_subset: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_subset[str(row["subset"])].append(row)
    if not by_subset:
        raise ValueError("no rows to score")
    subsets: dict[str, float] = {}
    for name, members in by_subset.items():
        if name.lower() == "ties":
            subsets[name] = rewardbench2_ties_score(members)["score"]
        else:
            subsets[name] = float(np.mean([rewardbench2_prompt_score(
                row["chosen_scores"], row["rejected_scores"]) for row in members]))
    return {"subsets": subsets, "counts": {name: len(m) for name, m in by_subset.items()},
            "mean": float(np.mean(list(subsets.values())))}
