"""Model scoring: a causal LM's log-probs of responses, in the shapes the metrics take.

``score_pairs``, ``score_best_of_n`` and ``score_mmlu_options`` turn a model into the inputs of
:func:`~auxdpo.harness.evaluation.metrics.pairwise_metrics`,
:func:`~auxdpo.harness.evaluation.rewardbench2.rewardbench2_scores` and
:func:`~auxdpo.harness.evaluation.mmlu_pro.mmlu_pro_option_accuracy`; ``generate_answers`` makes the
greedy answers :func:`~auxdpo.harness.evaluation.mmlu_pro.mmlu_pro_generation_accuracy` takes. torch is
imported on call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["score_responses", "score_pairs", "score_best_of_n", "score_mmlu_options",
           "generate_answers"]


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
    :func:`~auxdpo.harness.evaluation.metrics.pairwise_metrics`. ``options`` go to
    :func:`score_responses`.
    """
    rows = list(pairs)
    prompts = [row["prompt"] for row in rows]
    both = score_responses(model, tokenizer, prompts + prompts,
                           [row["chosen"] for row in rows] + [row["rejected"] for row in rows],
                           **options)
    return {"chosen_logps": both[:len(rows)], "rejected_logps": both[len(rows):]}


def score_best_of_n(model, tokenizer, rows: Iterable[Mapping[str, Any]], **options) -> list[dict]:
    """RewardBench 2 best-of-N rows → ``[{id, subset, chosen_scores, rejected_scores}]`` (log-probs),
    ready for :func:`~auxdpo.harness.evaluation.rewardbench2.rewardbench2_scores`."""
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
    (:func:`auxdpo.data.mmlu_pro.format_mmlu_prompt`), for
    :func:`~auxdpo.harness.evaluation.mmlu_pro.mmlu_pro_option_accuracy`."""
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


def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 32,
                     batch_size: int = 8, progress_desc: str | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), decoded without specials."""
    import torch

    from auxdpo.progress import progress

    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    texts: list[str] = []
    try:
        starts = range(0, len(prompts), batch_size)
        for start in progress(starts, desc=progress_desc, total=len(starts)):
            encoded = tokenizer(prompts[start:start + batch_size], return_tensors="pt",
                                padding=True)
            encoded = {k: v.to(device) for k, v in encoded.items() if k != "token_type_ids"}
            with torch.no_grad():
                out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=pad_id)
            new_tokens = out[:, encoded["input_ids"].shape[1]:]
            texts += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts
