"""TRL's extras around the losses, against closed forms: LD-DPO log-probs, combined terms with
weights and the SFT term, f-divergence scores, WPO weights, per-token statistics.

That the trainer's numbers with these options match TRL's own trainer is tested in
test_train_trl_compat.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from auxdpo.train.trl_objective import (
    AVERAGED,
    MARGIN_LOSSES,
    TokenStats,
    TRLObjective,
    ld_weighted_logps,
)
from tolerance import assert_close

F64 = torch.float64


def t(*values):
    return torch.tensor(values, dtype=F64)


def softplus(x):
    return math.log1p(math.exp(x))


def test_ld_dpo_counts_the_longer_responses_excess_alpha_times():
    # rows [chosen 1, chosen 2, rejected 1, rejected 2]; masks start after the prompt
    logps = torch.tensor([[9, -1, -2, -3], [9, -1, -2, 9], [9, -4, 9, 9], [9, -4, -5, -6]],
                         dtype=F64)
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1]])
    # pair 1: lengths 3 vs 1, shared 1; pair 2: 2 vs 3, shared 2
    assert_close(ld_weighted_logps(logps, mask, 0.5),
                 t(-1 + 0.5 * (-5), -3, -4, -9 + 0.5 * (-6)), ops=100)
    assert_close(ld_weighted_logps(logps, mask, 1.0), t(-6, -3, -4, -15), ops=100)
    assert_close(ld_weighted_logps(logps, mask, 0.0), t(-1, -3, -4, -9), ops=100)


def pair_inputs():
    """β·h = (1, −1): policy − reference = (2, 0) for chosen, (0, 2) for rejected, β = 1/2."""
    pc, pr = t(-1.0, -3.0), t(-4.0, -2.0)
    rc, rr = t(-3.0, -3.0), t(-4.0, -4.0)
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0]])
    return (pc, pr, rc, rr), {"completion_mask": mask}


def test_terms_add_with_their_weights_then_the_pair_weight_scales_the_sum():
    logps, inputs = pair_inputs()
    objective = TRLObjective(terms=(("dpo", 1.0), ("hinge", 0.5)))
    result = objective(*logps, inputs=inputs, stats=None, beta=0.5, weight=t(2.0, 1.0))
    # dpo: log(1 + e^{−βh}); hinge: max(0, 1 − βh)
    expected = t(2 * softplus(-1.0), softplus(1.0) + 0.5 * 2.0)
    assert_close(result.losses, expected, ops=100)
    assert_close(result.chosen_rewards, t(1.0, 0.0), ops=100)
    assert_close(result.rejected_rewards, t(0.0, 1.0), ops=100)


def test_the_sft_term_is_the_token_mean_nll_of_the_chosen_responses():
    logps, inputs = pair_inputs()
    # shifted mask: chosen rows [1, 1, 0] and [1, 1, 1]: five tokens
    token_logps = torch.tensor([[-1.0, -2.0, -7.0], [-0.5, -0.25, -0.25],
                                [-9.0, -9.0, -9.0], [-9.0, -9.0, -9.0]], dtype=F64)
    stats = SimpleNamespace(log_probs=token_logps)
    objective = TRLObjective(terms=(("dpo", 1.0),), sft_weight=0.25)
    losses = objective(*logps, inputs=inputs, stats=stats, beta=0.5).losses
    nll = (1.0 + 2.0 + 0.5 + 0.25 + 0.25) / 5
    assert_close(losses, t(softplus(-1.0) + 0.25 * nll, softplus(1.0) + 0.25 * nll), ops=100)


def test_an_f_divergence_replaces_the_log_ratio_in_margin_losses_only():
    logps, inputs = pair_inputs()
    # forward KL: f'(π/π_ref) = 1 − e^{−u}; u = 2 → 1 − e^{−2}, u = 0 → 0
    s = 1 - math.exp(-2.0)
    objective = TRLObjective(terms=(("dpo", 1.0),), f_divergence="forward_kl")
    assert_close(objective(*logps, inputs=inputs, stats=None, beta=0.5).losses,
                 t(softplus(-0.5 * s), softplus(0.5 * s)), ops=100)
    # averaged: f applied to the summed log-ratio, then divided by the completion length
    lengths = (2.0, 3.0)  # shifted chosen masks of pair_inputs: 2 and 3 tokens (1 and 2 rejected)
    averaged = TRLObjective(terms=(("dpo", 1.0),), f_divergence="forward_kl", average=True)
    margin = (1 - math.exp(-2.0 * lengths[0])) / lengths[0]
    assert_close(averaged(*logps, inputs=inputs, stats=None, beta=0.5).losses[0],
                 torch.tensor(softplus(-0.5 * margin), dtype=F64), ops=100)
    assert "dpop" not in MARGIN_LOSSES and AVERAGED <= MARGIN_LOSSES


def test_wpo_weights_multiply_the_pair_loss():
    logps, inputs = pair_inputs()
    mask = inputs["completion_mask"][:, 1:].to(F64)
    log_probs = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, -2.0, -2.0],
                              [-1.0, 0.0, 0.0], [-0.5, -1.5, 0.0]], dtype=F64) * mask
    log_sum_sq = torch.full((4, 3), -1.0, dtype=F64) * mask
    stats = SimpleNamespace(log_probs=log_probs, log_sum_sq_probs=log_sum_sq)
    objective = TRLObjective(terms=(("dpo", 1.0),), use_weighting=True)
    losses = objective(*logps, inputs=inputs, stats=stats, beta=0.5, weight=t(3.0, 1.0)).losses
    # w = exp(mean(log π − log Σπ²)): chosen means −1, −1; rejected means 0, 0
    w = math.exp(-1.0) * math.exp(0.0)
    assert_close(losses, t(3 * w * softplus(-1.0), w * softplus(1.0)), ops=100)


def test_batch_sorted_losses_refuse_a_weight_column():
    logps, inputs = pair_inputs()
    objective = TRLObjective(terms=(("aot", 1.0),))
    with pytest.raises(ValueError, match="weight column cannot weight loss_type aot"):
        objective(*logps, inputs=inputs, stats=None, beta=0.5, weight=t(1.0, 1.0))


def test_token_stats_from_logits_in_closed_form():
    """V = 5 logits (log 2, 0, 0, 0, 0): p = (2, 1, 1, 1, 1)/6 at every position."""
    V, T = 5, 4
    logits = torch.zeros(2, T, V, dtype=F64)
    logits[..., 0] = math.log(2.0)
    input_ids = torch.tensor([[3, 0, 1, 0], [3, 2, 0, 4]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    stats = TokenStats(SimpleNamespace(logits=logits), {"completion_mask": mask,
                                                        "input_ids": input_ids})
    on = mask[:, 1:].to(F64)
    top, other = math.log(2 / 6), math.log(1 / 6)
    assert_close(stats.log_probs, t([top, other, 0], [0, top, other]) * on, ops=100)
    entropy = -(2 / 6 * top + 4 / 6 * other)
    assert_close(stats.entropy, entropy * on, ops=100)
    assert_close(stats.log_sum_sq_probs, math.log(8 / 36) * on, ops=100)
    assert_close(stats.mean_logits, math.log(2.0) / 5 * on, ops=100)
    assert stats.is_top1.tolist() == [[True, False, False], [False, True, False]]
    with pytest.raises(AttributeError):
        stats.logits_of_something_else


def test_token_stats_take_the_fused_heads_fields_right_aligned():
    """Prompt-learning PEFT prepends virtual tokens: the last T − 1 positions are the text's."""
    fused = torch.arange(2 * 6, dtype=F64).reshape(2, 6)
    outputs = SimpleNamespace(log_probs=fused, entropy=-fused, log_sum_sq_probs=fused,
                              mean_logits=fused, is_top1=fused > 5, logits=None)
    stats = TokenStats(outputs, {"completion_mask": torch.ones(2, 4, dtype=torch.long),
                                 "input_ids": torch.zeros(2, 4, dtype=torch.long)})
    assert torch.equal(stats.log_probs, fused[:, 3:])
    assert torch.equal(stats.entropy, -fused[:, 3:])
