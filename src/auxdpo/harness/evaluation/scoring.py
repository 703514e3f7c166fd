"""Scores of one model on a held-out set, and the metrics of a policy against its base.

Scoring (model calls, torch imported on call) and metrics (pure functions of the scores) are
separate so that the base model is scored once per data set and its scores reused by every
run: implicit rewards β·(log π − log π_ref) need the base's log-probs of the same rows.

Metrics (all fractions in [0, 1]):

* ``pairwise``: ``logp_accuracy`` (chosen has the higher policy log-prob: the paper's Table 1
  number) and ``implicit_reward_accuracy`` (chosen has the higher β·log π/π_ref); the base
  model has no implicit reward (None).
* ``rewardbench2`` (RewardBench 2 rows only): official best-of-N scores per subset and their
  unweighted mean, with log-probs as scores (``logp``) and with implicit rewards
  (``implicit_reward``; None for the base). Ties rows whose ``ref:N`` / ``tied:N`` partner
  is not in the set are left out of the Ties score and counted (``ties_rows_unmatched``).
* ``mmlu_pro`` (MMLU-Pro rows only): accuracy per subject by highest option log-likelihood
  (``options``) and, when generations were made, by the generated letter (``generation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from auxdpo.harness.evaluation.metrics import pairwise_accuracy
from auxdpo.harness.evaluation.mmlu_pro import (
    mmlu_pro_generation_accuracy,
    mmlu_pro_option_accuracy,
)
from auxdpo.harness.evaluation.responses import (
    generate_answers,
    score_best_of_n,
    score_mmlu_options,
    score_pairs,
)
from auxdpo.harness.evaluation.rewardbench2 import rewardbench2_scores

__all__ = ["HeldOut", "score_model", "compute_metrics"]


@dataclass
class HeldOut:
    """One data set's held-out set: preference pairs and the rows they came from.

    ``pairs``: dicts with prompt/chosen/rejected (+ ``category`` or ``subset``). ``rows``:
    RewardBench 2 best-of-N rows or MMLU-Pro questions (for the official / per-subject scores).
    """

    dataset: str
    pairs: list[dict]
    rows: list[dict]


def score_model(model, tokenizer, held: HeldOut, *, batch_size: int = 8,
                max_length: int | None = None, generate: bool = False,
                max_new_tokens: int = 32, label: str | None = None) -> dict[str, Any]:
    """Raw scores (JSON-ready lists) of ``model`` on ``held``:

    ``pair_chosen``/``pair_rejected`` (B,) summed log-probs; RewardBench 2:
    ``best_of_n`` [{id, subset, chosen_scores, rejected_scores}]; MMLU-Pro: ``options``
    [per question (n_options,)] and, with ``generate``, ``generations`` [str].
    ``label`` (e.g. "model", "base") names progress bars shown on a terminal (None: none).
    """
    from auxdpo.data.mmlu_pro import format_mmlu_prompt

    options = {"batch_size": batch_size, "max_length": max_length}

    def desc(what: str) -> str | None:
        return f"{label}: {what}" if label else None

    def bar(what: str) -> dict:
        return {**options, "progress_desc": desc(what)}

    was_training = model.training
    model.eval()
    pairs = score_pairs(model, tokenizer, held.pairs, **bar("scoring pairs"))
    scores: dict[str, Any] = {"pair_chosen": pairs["chosen_logps"].tolist(),
                              "pair_rejected": pairs["rejected_logps"].tolist()}
    if held.dataset == "rewardbench2":
        scores["best_of_n"] = [
            {"id": row["id"], "subset": row["subset"],
             "chosen_scores": np.asarray(row["chosen_scores"]).tolist(),
             "rejected_scores": np.asarray(row["rejected_scores"]).tolist()}
            for row in score_best_of_n(model, tokenizer, held.rows, **bar("scoring best-of-N"))]
    if held.dataset == "mmlu-pro":
        scores["options"] = [s.tolist() for s in score_mmlu_options(
            model, tokenizer, held.rows, **bar("scoring MMLU-Pro options"))]
        if generate:
            prompts = [format_mmlu_prompt(q["question"], q["options"]) for q in held.rows]
            scores["generations"] = generate_answers(model, tokenizer, prompts,
                                                     max_new_tokens=max_new_tokens,
                                                     batch_size=batch_size,
                                                     progress_desc=desc("generating"))
    model.train(was_training)
    return scores


def _scorable(rows: list[dict]) -> list[dict]:
    """Drop Ties rows whose ``ref:N`` / ``tied:N`` partner is missing (a split by prompt can
    separate them); the official Ties score is defined on matched pairs only."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        if str(row["subset"]).lower() == "ties":
            kind, _, number = str(row["id"]).partition(":")
            kinds.setdefault(number, set()).add(kind)
    return [row for row in rows if str(row["subset"]).lower() != "ties"
            or kinds.get(str(row["id"]).partition(":")[2]) == {"ref", "tied"}]


def _rb2(rows: list[dict]) -> dict[str, Any]:
    kept = _scorable(rows)
    result = rewardbench2_scores(kept)
    result["ties_rows_unmatched"] = len(rows) - len(kept)
    return result


def _implicit_best_of_n(policy: list[dict], reference: list[dict], beta: float) -> list[dict]:
    rows = []
    for mine, ref in zip(policy, reference):
        if mine["id"] != ref["id"]:
            raise ValueError(f"best-of-N rows out of order: {mine['id']} vs {ref['id']}")
        rows.append({"id": mine["id"], "subset": mine["subset"], **{
            key: beta * (np.asarray(mine[key]) - np.asarray(ref[key]))
            for key in ("chosen_scores", "rejected_scores")}})
    return rows


def compute_metrics(held: HeldOut, policy: dict, reference: dict | None, *,
                    beta: float) -> dict[str, Any]:
    """Metrics of ``policy``'s scores; ``reference`` = the base's scores (None: ``policy`` is
    the base, and implicit-reward metrics are None)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen, rejected = np.asarray(policy["pair_chosen"]), np.asarray(policy["pair_rejected"])
    implicit = None
    if reference is not None:
        implicit = pairwise_accuracy(beta * (chosen - np.asarray(reference["pair_chosen"])),
                                     beta * (rejected - np.asarray(reference["pair_rejected"])))
    metrics: dict[str, Any] = {"pairwise": {"n_pairs": len(chosen),
                                            "logp_accuracy": pairwise_accuracy(chosen, rejected),
                                            "implicit_reward_accuracy": implicit}}
    if "best_of_n" in policy:
        metrics["rewardbench2"] = {
            "logp": _rb2(policy["best_of_n"]),
            "implicit_reward": None if reference is None else _rb2(
                _implicit_best_of_n(policy["best_of_n"], reference["best_of_n"], beta))}
    if "options" in policy:
        answers = [q["answer_index"] for q in held.rows]
        categories = [q["category"] for q in held.rows]
        metrics["mmlu_pro"] = {"options": mmlu_pro_option_accuracy(policy["options"], answers,
                                                                   categories)}
        if "generations" in policy:
            metrics["mmlu_pro"]["generation"] = mmlu_pro_generation_accuracy(
                policy["generations"], answers, categories,
                [len(q["options"]) for q in held.rows])
    return metrics
