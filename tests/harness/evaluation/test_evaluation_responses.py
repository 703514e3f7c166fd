"""Model scoring (padded batches) against an unpadded, token-by-token brute-force reference."""

import numpy as np
import pytest
import torch

from auxdpo.data.mmlu_pro import format_mmlu_prompt
from auxdpo.harness.evaluation.metrics import pairwise_metrics
from auxdpo.harness.evaluation.responses import (
    score_best_of_n,
    score_mmlu_options,
    score_pairs,
    score_responses,
)
from auxdpo.harness.evaluation.rewardbench2 import rewardbench2_scores
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def tiny():
    model = build_tiny_model("llama", dtype=torch.float64, seed=3).eval()
    return model, build_char_tokenizer()


def _brute_force(model, tokenizer, prompt, response, average=False):
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
    terms = [logprobs[t - 1, ids[0, t]].item()
             for t in range(len(prompt_ids), len(prompt_ids) + len(response_ids))]
    return float(np.mean(terms) if average else np.sum(terms))


def test_padded_batches_match_brute_force(tiny):
    model, tokenizer = tiny
    prompts = ["Hi", "What is 2+2? Think.", "x"]
    responses = ["Hello there!", "4", "a much longer response than the others"]
    got = score_responses(model, tokenizer, prompts, responses, batch_size=2)
    expected = [_brute_force(model, tokenizer, p, r) for p, r in zip(prompts, responses)]
    assert got.dtype == torch.float64
    assert got.numpy() == pytest.approx(expected, abs=1e-9)
    mean = score_responses(model, tokenizer, prompts, responses, average=True)
    assert mean.numpy() == pytest.approx(
        [_brute_force(model, tokenizer, p, r, average=True) for p, r in zip(prompts, responses)],
        abs=1e-9)


def test_pairs_best_of_n_and_options_feed_the_metrics(tiny):
    model, tokenizer = tiny
    pairs = [{"prompt": "Q1", "chosen": "yes", "rejected": "no"},
             {"prompt": "Q2", "chosen": "blue", "rejected": "green!"}]
    scored = score_pairs(model, tokenizer, pairs)
    assert scored["chosen_logps"][1].item() == pytest.approx(
        _brute_force(model, tokenizer, "Q2", "blue"), abs=1e-9)
    metrics = pairwise_metrics(scored["chosen_logps"], scored["rejected_logps"],
                               scored["chosen_logps"], scored["rejected_logps"], beta=0.1)
    assert metrics["implicit_reward_accuracy"] == 0.0  # policy = reference: all rewards tie
    rows = [{"id": "0", "subset": "Math", "prompt": "1+1?", "chosen": ["2"],
             "rejected": ["3", "11", "two"]}]
    best = score_best_of_n(model, tokenizer, rows)
    assert best[0]["rejected_scores"][2] == pytest.approx(
        _brute_force(model, tokenizer, "1+1?", "two"), abs=1e-9)
    assert rewardbench2_scores(best)["subsets"]["Math"] in (0.0, 1.0)
    question = {"question": "2+2?", "options": ["3", "4", "five"], "answer_index": 1}
    (option_logps,) = score_mmlu_options(model, tokenizer, [question])
    assert option_logps[2] == pytest.approx(
        _brute_force(model, tokenizer, format_mmlu_prompt("2+2?", ["3", "4", "five"]), "five"),
        abs=1e-9)
