"""Metrics of a policy vs its base from hand-made scores, and model scoring on a tiny model."""

import pytest

from auxdpo.harness.evaluation.scoring import HeldOut, compute_metrics

BETA = 0.5


def _rb2_case():
    held = HeldOut("rewardbench2", pairs=[{}] * 3, rows=[])
    policy = {"pair_chosen": [-1, -5, -2], "pair_rejected": [-2, -4, -2], "best_of_n": [
        {"id": "a", "subset": "Factuality", "chosen_scores": [-1], "rejected_scores": [-2, -3]},
        {"id": "b", "subset": "Math", "chosen_scores": [-3], "rejected_scores": [-1, -4]}]}
    reference = {"pair_chosen": [-1.5, -6, -2.5], "pair_rejected": [-1, -4, -2], "best_of_n": [
        {"id": "a", "subset": "Factuality", "chosen_scores": [-0.5], "rejected_scores": [-2, -3]},
        {"id": "b", "subset": "Math", "chosen_scores": [-4], "rejected_scores": [-1, -4]}]}
    return held, policy, reference


def test_pairwise_and_rewardbench2_metrics_by_hand():
    held, policy, reference = _rb2_case()
    metrics = compute_metrics(held, policy, reference, beta=BETA)
    # log-probs: -1 > -2 yes, -5 > -4 no, -2 = -2 tie (wrong) → 1/3
    assert metrics["pairwise"]["logp_accuracy"] == pytest.approx(1 / 3)
    # implicit: chosen β·(0.5, 1, 0.5) vs rejected β·(-1, 0, 0) → 3/3
    assert metrics["pairwise"]["implicit_reward_accuracy"] == 1.0
    logp = metrics["rewardbench2"]["logp"]
    assert logp["subsets"] == {"Factuality": 1.0, "Math": 0.0} and logp["mean"] == 0.5
    # implicit best-of-N: a: chosen -0.5β vs 0, 0 → 0; b: chosen +β vs 0, 0 → 1
    implicit = metrics["rewardbench2"]["implicit_reward"]
    assert implicit["subsets"] == {"Factuality": 0.0, "Math": 1.0}


def test_base_metrics_have_no_implicit_reward():
    held, policy, _ = _rb2_case()
    metrics = compute_metrics(held, policy, None, beta=BETA)
    assert metrics["pairwise"]["implicit_reward_accuracy"] is None
    assert metrics["rewardbench2"]["implicit_reward"] is None
    with pytest.raises(ValueError, match="beta"):
        compute_metrics(held, policy, None, beta=0)


def test_unmatched_ties_rows_are_left_out_and_counted():
    rows = [{"id": "ref:1", "subset": "Ties", "chosen_scores": [0], "rejected_scores": [-1]},
            {"id": "tied:2", "subset": "Ties", "chosen_scores": [0, -0.5],
             "rejected_scores": [-1]},
            {"id": "x", "subset": "Focus", "chosen_scores": [0], "rejected_scores": [-1]}]
    held = HeldOut("rewardbench2", pairs=[{}], rows=[])
    scores = {"pair_chosen": [0.0], "pair_rejected": [-1.0], "best_of_n": rows}
    logp = compute_metrics(held, scores, None, beta=BETA)["rewardbench2"]["logp"]
    assert logp["subsets"] == {"Focus": 1.0} and logp["ties_rows_unmatched"] == 2


def test_mmlu_option_and_generation_accuracy_by_hand():
    held = HeldOut("mmlu-pro", pairs=[{}, {}], rows=[
        {"answer_index": 0, "category": "law", "options": ["a", "b", "c"]},
        {"answer_index": 1, "category": "math", "options": ["a", "b", "c"]}])
    scores = {"pair_chosen": [0, 0], "pair_rejected": [-1, 1],
              "options": [[-1, -2, -3], [-2, -2, -5]],
              "generations": ["The answer is (A).", "no idea"]}
    mmlu = compute_metrics(held, scores, None, beta=BETA)["mmlu_pro"]
    # q1 right; q2 ties two ways for the top → 1/2
    assert mmlu["options"]["per_category"] == {"law": 1.0, "math": 0.5}
    assert mmlu["options"]["overall"] == 0.75
    assert mmlu["generation"]["per_category"] == {"law": 1.0, "math": 0.0}
    assert mmlu["generation"]["unparsed"] == 1


def test_score_model_matches_the_evaluate_helpers_and_batched_generation():
    import torch

    from auxdpo.harness.evaluation.responses import generate_answers, score_responses
    from auxdpo.harness.evaluation.scoring import score_model
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model
    from tolerance import assert_close

    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model("llama", num_layers=1, hidden_size=16, dtype=torch.float64).eval()
    questions = [{"id": "1", "question": "2+2?", "options": ["4", "5", "22"], "answer_index": 0,
                  "category": "math"},
                 {"id": "2", "question": "Capital of France, please?",
                  "options": ["Paris", "Rome", "Oslo", "Bern"], "answer_index": 0,
                  "category": "geo"}]
    pairs = [{"prompt": "p1", "chosen": "yes", "rejected": "no"},
             {"prompt": "longer prompt 2", "chosen": "a", "rejected": "bcd"}]
    scores = score_model(model, tokenizer, HeldOut("mmlu-pro", pairs, questions), batch_size=1,
                         generate=True, max_new_tokens=4)
    direct = score_responses(model, tokenizer, ["p1", "longer prompt 2"], ["yes", "a"])
    # Batched and one-by-one passes round differently: round-off at the log-probs' scale.
    assert_close(torch.tensor(scores["pair_chosen"], dtype=direct.dtype), direct, ops=1e3)
    assert [len(s) for s in scores["options"]] == [3, 4]
    # left-padded batch generation = one prompt at a time (greedy)
    prompts = ["short", "a much longer prompt here"]
    together = generate_answers(model, tokenizer, prompts, max_new_tokens=5, batch_size=2)
    alone = [generate_answers(model, tokenizer, [p], max_new_tokens=5)[0] for p in prompts]
    assert together == alone and all(len(text) <= 5 for text in together)
