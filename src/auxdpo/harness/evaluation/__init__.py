"""Evaluation: metrics, model scoring, tables and figures, and ``auxdpo eval``.

* :mod:`auxdpo.harness.evaluation.metrics` — pairwise accuracy (log-prob and implicit reward)
* :mod:`auxdpo.harness.evaluation.rewardbench2` — RewardBench 2's official best-of-N and Ties scores
* :mod:`auxdpo.harness.evaluation.mmlu_pro` — MMLU-Pro accuracy per subject, answer-letter extraction
* :mod:`auxdpo.harness.evaluation.responses` — a causal LM's log-probs of responses, greedy answers
* :mod:`auxdpo.harness.evaluation.scoring` — one model on a held-out set, metrics against its base
* :mod:`auxdpo.harness.evaluation.models` — the model to score: hub name, folder, run folder,
  PEFT adapter or offline ``tiny-*`` model
* :mod:`auxdpo.harness.evaluation.report` — tables (markdown/CSV/JSON), figures, atomic writes
* :mod:`auxdpo.harness.evaluation.cli` — ``auxdpo eval``

The metrics are pure functions of scores (lists, numpy arrays or torch tensors). Names load
lazily, ``from auxdpo.harness.evaluation import pairwise_accuracy`` included: importing the package
imports neither numpy nor torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    **dict.fromkeys(("pairwise_accuracy", "implicit_reward_accuracy", "pairwise_metrics"),
                    "auxdpo.harness.evaluation.metrics"),
    **dict.fromkeys(("rewardbench2_prompt_score", "rewardbench2_ties_score",
                     "rewardbench2_scores"), "auxdpo.harness.evaluation.rewardbench2"),
    **dict.fromkeys(("top_choice_credit", "mmlu_pro_option_accuracy", "extract_answer_letter",
                     "mmlu_pro_generation_accuracy"), "auxdpo.harness.evaluation.mmlu_pro"),
    **dict.fromkeys(("score_responses", "score_pairs", "score_best_of_n", "score_mmlu_options",
                     "generate_answers"), "auxdpo.harness.evaluation.responses"),
    **dict.fromkeys(("HeldOut", "score_model", "compute_metrics"), "auxdpo.harness.evaluation.scoring"),
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'auxdpo.harness.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
