"""Evaluation metrics as pure functions of scores and log-probs (no model calls).

* Pairwise accuracy (the paper's Table 1): share of pairs whose chosen response has the higher
  policy log-prob, and the same with implicit rewards β·log π/π_ref (both reported, labeled).
* RewardBench 2 official scoring: best-of-N per prompt (1/k on a k-way tie for the top), the
  Ties subset's own weighted rule, per-subset scores and their unweighted mean.
* MMLU-Pro: accuracy per subject by highest option log-likelihood, and answer-letter
  extraction from generated text (MMLU-Pro's regex cascade).
* Model scoring (torch imported on call): ``score_pairs``, ``score_best_of_n`` and
  ``score_mmlu_options`` turn a causal LM into the log-probs the metrics take.

Scores may be lists, numpy arrays or torch tensors (moved to CPU as float64).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "pairwise_accuracy",
    "implicit_reward_accuracy",
    "pairwise_metrics",
    "rewardbench2_prompt_score",
    "rewardbench2_ties_score",
    "rewardbench2_scores",
    "top_choice_credit",
    "mmlu_pro_option_accuracy",
    "extract_answer_letter",
    "mmlu_pro_generation_accuracy",
    "score_responses",
    "score_pairs",
    "score_best_of_n",
    "score_mmlu_options",
]


def _vector(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().to("cpu").double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (B,), got shape {array.shape}")
    return array


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"lengths differ: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("no pairs to score")
    return n


# ---------------------------------------------------------------- pairwise accuracy


def pairwise_accuracy(chosen_scores: Any, rejected_scores: Any) -> float:
    """Share of pairs with ``chosen > rejected`` (strict: a tie counts as wrong). Inputs (B,)."""
    chosen, rejected = _vector(chosen_scores, "chosen_scores"), _vector(rejected_scores,
                                                                        "rejected_scores")
    _same_length(chosen=chosen, rejected=rejected)
    return float(np.mean(chosen > rejected))


def implicit_reward_accuracy(policy_chosen_logps: Any, policy_rejected_logps: Any,
                             ref_chosen_logps: Any, ref_rejected_logps: Any, *,
                             beta: float) -> float:
    """Share of pairs whose implicit reward β·(log π − log π_ref) favours chosen (Eq. 3's r_θ).

    All inputs (B,). With β > 0 this ranks by the log-ratio, not by the policy's log-prob:
    the two accuracies differ whenever the reference already prefers one response.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen_reward = beta * (_vector(policy_chosen_logps, "policy_chosen_logps")
                            - _vector(ref_chosen_logps, "ref_chosen_logps"))
    rejected_reward = beta * (_vector(policy_rejected_logps, "policy_rejected_logps")
                              - _vector(ref_rejected_logps, "ref_rejected_logps"))
    return pairwise_accuracy(chosen_reward, rejected_reward)


def pairwise_metrics(policy_chosen_logps: Any, policy_rejected_logps: Any,
                     ref_chosen_logps: Any, ref_rejected_logps: Any, *,
                     beta: float) -> dict[str, float]:
    """All pairwise accuracies, labeled: ``{"n_pairs", "logp_accuracy",
    "implicit_reward_accuracy", "reference_logp_accuracy"}`` (the last is the base model's)."""
    return {
        "n_pairs": int(_same_length(a=_vector(policy_chosen_logps, "policy_chosen_logps"),
                                    b=_vector(ref_rejected_logps, "ref_rejected_logps"))),
        "logp_accuracy": pairwise_accuracy(policy_chosen_logps, policy_rejected_logps),
        "implicit_reward_accuracy": implicit_reward_accuracy(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            beta=beta),
        "reference_logp_accuracy": pairwise_accuracy(ref_chosen_logps, ref_rejected_logps),
    }


# ---------------------------------------------------------------- RewardBench 2


def rewardbench2_prompt_score(chosen_scores: Any, rejected_scores: Any) -> float:
    """One non-Ties prompt, the official rule: 1/k when the (first) chosen answer ties k ways
    for the top score (1 when it is alone on top), 0 when any answer outscores it.

    Non-Ties rows have one chosen answer; with several, only the first is judged and the
    others count among the k, as in the official ``reroll_and_score_dataset``.
    """
    chosen, rejected = _vector(chosen_scores, "chosen_scores"), _vector(rejected_scores,
                                                                        "rejected_scores")
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
        chosen = _vector(row["chosen_scores"], "chosen_scores")
        rejected = _vector(row["rejected_scores"], "rejected_scores")
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


# ---------------------------------------------------------------- MMLU-Pro

_LETTERS = "ABCDEFGHIJ"


def top_choice_credit(option_scores: Any, answer_index: int) -> float:
    """1/k when the answer ties k ways for the highest score, else 0 (argmax with fair ties)."""
    scores = _vector(option_scores, "option_scores")
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


# ---------------------------------------------------------------- model scoring


def _encode(tokenizer, prompt: str, response: str, append_eos: bool,
            max_length: int | None) -> tuple[list[int], list[int]]:
    """Prompt tokens (with the tokenizer's special tokens) + response tokens (+ eos)."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if append_eos and tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    ids = prompt_ids + response_ids
    mask = [0] * len(prompt_ids) + [1] * len(response_ids)
    if max_length is not None and len(ids) > max_length:  # drop the prompt's start first
        ids, mask = ids[-max_length:], mask[-max_length:]
    return ids, mask


def score_responses(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                    batch_size: int = 8, average: bool = False, append_eos: bool = True,
                    max_length: int | None = None, progress_desc: str | None = None):
    """``(N,)`` float64 log π(response | prompt) under ``model``, summed (or averaged) over the
    response tokens, via :func:`auxdpo.logps.model_sequence_logps` in right-padded batches.

    Tokenization: the prompt with the tokenizer's special tokens, then the response without
    them, then eos (``append_eos``); over ``max_length`` tokens the prompt's start is dropped.
    ``progress_desc`` labels a progress bar on an interactive terminal (None: no bar).
    """
    import torch

    from auxdpo.logps import model_sequence_logps
    from auxdpo.progress import progress

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = []
    starts = range(0, len(prompts), batch_size)
    for start in progress(starts, desc=progress_desc, total=len(starts)):
        encoded = [_encode(tokenizer, p, r, append_eos, max_length)
                   for p, r in zip(prompts[start:start + batch_size],
                                   responses[start:start + batch_size])]
        width = max(len(ids) for ids, _ in encoded)
        pad = [width - len(ids) for ids, _ in encoded]
        batch = {
            "input_ids": torch.tensor([ids + [pad_id] * n for (ids, _), n in zip(encoded, pad)]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * n
                                            for (ids, _), n in zip(encoded, pad)]),
            "completion_mask": torch.tensor([m + [0] * n for (_, m), n in zip(encoded, pad)]),
        }
        with torch.no_grad():
            logps = model_sequence_logps(model, {k: v.to(device) for k, v in batch.items()},
                                         average=average)
        scores.append(logps.detach().to("cpu", torch.float64))
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


def score_pairs(model, tokenizer, pairs: Iterable[Mapping[str, str]], **options) -> dict:
    """``{"chosen_logps", "rejected_logps"}``, each ``(B,)``, for rows with prompt/chosen/rejected.

    Score the policy and the reference separately, then pass the four tensors to
    :func:`pairwise_metrics`. ``options`` go to :func:`score_responses`.
    """
    rows = list(pairs)
    prompts = [row["prompt"] for row in rows]
    both = score_responses(model, tokenizer, prompts + prompts,
                           [row["chosen"] for row in rows] + [row["rejected"] for row in rows],
                           **options)
    return {"chosen_logps": both[:len(rows)], "rejected_logps": both[len(rows):]}


def score_best_of_n(model, tokenizer, rows: Iterable[Mapping[str, Any]], **options) -> list[dict]:
    """RewardBench 2 best-of-N rows → ``[{id, subset, chosen_scores, rejected_scores}]`` (log-probs),
    ready for :func:`rewardbench2_scores`."""
    rows = list(rows)
    prompts, responses = [], []
    for row in rows:
        answers = list(row["chosen"]) + list(row["rejected"])
        prompts += [row["prompt"]] * len(answers)
        responses += answers
    flat = score_responses(model, tokenizer, prompts, responses, **options).numpy()
    scored, offset = [], 0
    for row in rows:
        n_chosen, n_all = len(row["chosen"]), len(row["chosen"]) + len(row["rejected"])
        scores = flat[offset:offset + n_all]
        scored.append({"id": row["id"], "subset": row["subset"],
                       "chosen_scores": scores[:n_chosen], "rejected_scores": scores[n_chosen:]})
        offset += n_all
    return scored


def score_mmlu_options(model, tokenizer, questions: Iterable[Mapping[str, Any]],
                       **options) -> list[np.ndarray]:
    """Per question, the ``(n_options,)`` log-likelihoods of its options after the pair prompt
    (:func:`auxdpo.data.mmlu_pro.format_mmlu_prompt`), for :func:`mmlu_pro_option_accuracy`."""
    from auxdpo.data.mmlu_pro import format_mmlu_prompt

    questions = list(questions)
    prompts, responses = [], []
    for question in questions:
        prompt = format_mmlu_prompt(question["question"], question["options"])
        prompts += [prompt] * len(question["options"])
        responses += list(question["options"])
    flat = score_responses(model, tokenizer, prompts, responses, **options).numpy()
    bounds = np.cumsum([0] + [len(question["options"]) for question in questions])
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(questions))]
