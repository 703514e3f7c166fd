"""MMLU-Pro accuracy, as pure functions of scores and generations (no model calls).

Accuracy per subject by highest option log-likelihood, and answer-letter extraction from
generated text (MMLU-Pro's regex cascade).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from auxdpo.harness.evaluation.metrics import as_vector

__all__ = ["top_choice_credit", "mmlu_pro_option_accuracy", "extract_answer_letter",
           "mmlu_pro_generation_accuracy"]

_LETTERS = "ABCDEFGHIJ"


def top_choice_credit(option_scores: Any, answer_index: int) -> float:
    """1/k when the answer ties k ways for the highest score, else 0 (argmax with fair ties)."""
    scores = as_vector(option_scores, "option_scores")
    if not 0 <= answer_index < len(scores):
        raise ValueError(f"answer_index {answer_index} outside {len(scores)} options")
    top = scores.max()
    return float(scores[answer_index] == top) / int(np.sum(scores == top))


def _per_category(credit: Sequence[float], categories: Sequence[str]) -> dict[str, Any]:
    if len(credit) != len(categories):
        raise ValueError(f"{len(credit)} questions but {len(categories)} categories")
    if not credit:
        raise ValueError("no questions to score")
    groups: dict[str, list[float]] = defaultdict(list)
    for value, category in zip(credit, categories):
        groups[str(category)].append(value)
    return {"overall": float(np.mean(credit)),  # micro average over questions, as MMLU-Pro
            "per_category": {name: float(np.mean(values)) for name, values in sorted(groups.items())},
            "counts": {name: len(values) for name, values in sorted(groups.items())}}


def mmlu_pro_option_accuracy(option_logps: Sequence[Any], answer_indices: Sequence[int],
                             categories: Sequence[str]) -> dict[str, Any]:
    """Accuracy by highest option log-likelihood, overall and per subject.

    ``option_logps[q]``: the (n_options_q,) log-likelihoods of question q's options (3 to 10).
    A question scores :func:`top_choice_credit`. Returns ``{"overall", "per_category",
    "counts"}``; ``overall`` averages over questions (not over subjects).
    """
    if len(option_logps) != len(answer_indices):
        raise ValueError(f"{len(option_logps)} score lists but {len(answer_indices)} answers")
    credit = [top_choice_credit(scores, int(answer))
              for scores, answer in zip(option_logps, answer_indices)]
    return _per_category(credit, categories)


# The cascade of MMLU-Pro's own evaluation script, rewritten: "answer is (X)", then
# "Answer: X", then the last standalone capital letter of the allowed range.
def _patterns(letters: str) -> tuple[re.Pattern, ...]:
    span = f"[{letters}]"
    return (re.compile(rf"answer is \(?({span})\)?"),
            re.compile(rf".*[aA]nswer:\s*\(?({span})\b", re.DOTALL),
            re.compile(rf"\b({span})\b(?!.*\b{span}\b)", re.DOTALL))


def extract_answer_letter(text: str, n_options: int = 10) -> str | None:
    """The answer letter a generation commits to, or None when none can be found.

    Tries, in order: ``answer is (X)`` / ``answer is X`` (first occurrence), the last
    ``Answer: X``, then the last standalone letter among the first ``n_options`` letters.
    """
    if not 1 <= n_options <= len(_LETTERS):
        raise ValueError(f"n_options must be in 1..10, got {n_options}")
    for pattern in _patterns(_LETTERS[:n_options]):
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def mmlu_pro_generation_accuracy(generations: Sequence[str], answer_indices: Sequence[int],
                                 categories: Sequence[str],
                                 n_options: Sequence[int] | None = None) -> dict[str, Any]:
    """Accuracy of generated answers, overall and per subject, plus ``"unparsed"``.

    A generation with no extractable letter counts as wrong (MMLU-Pro's script substitutes a
    random guess instead; we keep the metric deterministic and report the count).
    """
    if len(generations) != len(answer_indices):
        raise ValueError(f"{len(generations)} generations but {len(answer_indices)} answers")
    n_options = n_options or [10] * len(generations)
    letters = [extract_answer_letter(text, n) for text, n in zip(generations, n_options)]
    credit = [float(letter is not None and letter == _LETTERS[int(answer)])
              for letter, answer in zip(letters, answer_indices)]
    result = _per_category(credit, categories)
    result["unparsed"] = sum(letter is None for letter in letters)
    return result
