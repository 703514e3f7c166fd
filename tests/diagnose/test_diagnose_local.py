"""The local model against the lab's exact solvers (float64): on the log-linear class DPO's
loss depends on θ only through x = β(θ − θ₀), so the diagnostic's DPO and AuxDPO steps are the
lab's exact minimisers, and its RLHF step is Eq. 5; Prop. 2's bandit gives the known reversal."""

from __future__ import annotations

import pytest
import torch

from auxdpo.diagnose.local import (
    Comparisons,
    bootstrap_gaps,
    centered,
    fit_reward,
    local_model,
    policy_weights,
    reward_precision,
    reward_prior,
    score_coordinates,
)
from auxdpo.geometry import base_weights, score_matrix
from auxdpo.harness.lab.experiments import prop2
from auxdpo.harness.lab.policies import three_response_policy
from auxdpo.harness.lab.problems import random_loglinear_instance
from auxdpo.harness.lab.solvers import solve_all

F64 = torch.float64


def _population(policy, problem):
    """(A, Comparisons over every (s, a), D, r*) of a lab instance, labels from r*."""
    table = problem.pair_table()
    n_actions = problem.num_actions
    prompt = torch.arange(problem.num_states).repeat_interleave(n_actions)
    comparisons = Comparisons(prompt, table.state * n_actions + table.first,
                              table.state * n_actions + table.second, table.pref_prob,
                              table.weight)
    a = score_matrix(policy.log_probs, policy.theta0)
    weights = base_weights(problem.rho, policy.log_probs(policy.theta0))
    return a, comparisons, weights, problem.reward.reshape(-1)


@pytest.mark.parametrize("seed, beta", [(0, 1.0), (1, 10.0)])
def test_steps_are_the_lab_solvers_solutions_on_the_log_linear_class(seed, beta):
    policy, problem = random_loglinear_instance(seed, beta=beta, skew=1.0, num_states=3,
                                                num_actions=5, dim=3)
    a, comparisons, weights, reward = _population(policy, problem)
    coords, basis = score_coordinates(a)
    result = local_model(coords, comparisons, reward, weights,
                         torch.zeros(comparisons.num_responses, dtype=F64))
    lab = solve_all(policy, problem, methods=("dpo", "auxdpo"))
    for ours, theirs in (("rlhf", "rlhf_local"), ("dpo", "dpo"), ("auxdpo", "auxdpo")):
        x = basis @ result.steps[ours]                               # x = β(θ − θ₀)
        expected = beta * (lab[theirs].theta - policy.theta0)
        scale = float(expected.abs().max())
        assert scale > 1e-3
        # L-BFGS to gtol 1e-12 against Newton: both converged to ~1e-9 of the scale.
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-6 * scale, msg=ours)
    # With every response observed and identified, AuxDPO reaches the local RLHF step.
    assert result.predicted_gap["auxdpo"] == pytest.approx(1.0, abs=1e-6)
    assert result.null_dim == result.identified - result.rank > 0


def test_prop2_bandit_predicts_dpo_lowering_the_expected_reward():
    """r* = [1, 2, 0], counts n12 = n23 = 1, n31 = 100 (the paper's reversal): DPO's step
    points against RLHF's (cosine −1) and reaches −1.82 of its gain, the ratio of the lab's
    exact θ's; AuxDPO reaches all of it."""
    policy = three_response_policy()
    a = score_matrix(policy.log_probs, policy.theta0)
    reward = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    first, second = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    comparisons = Comparisons(torch.zeros(3), first, second,
                              torch.sigmoid(reward[first] - reward[second]),
                              torch.tensor([1.0, 1.0, 100.0]))
    coords, _ = score_coordinates(a)
    weights = policy_weights(torch.zeros(3, dtype=torch.long), policy.log_probs(policy.theta0)[0])
    result = local_model(coords, comparisons, reward, weights, torch.zeros(3, dtype=F64))
    lab = prop2(10.0)
    expected = lab["theta"]["dpo"] / lab["theta"]["rlhf_local"]          # −1.8227
    assert result.predicted_gap["dpo"] == pytest.approx(expected, rel=1e-8)
    assert result.predicted_gap["dpo"] < -1.8
    assert result.step_cosine == pytest.approx(-1.0, abs=1e-12)
    assert result.predicted_gap["auxdpo"] == pytest.approx(1.0, abs=1e-6)


def test_fit_reward_solves_its_stationarity_equations():
    """Gradient of the fitted objective is zero: Σ count·(σ(r_i − r_j) − p) at each response
    plus τ_k r_k, by hand on a 3-response triangle with soft and hard labels."""
    comparisons = Comparisons(torch.zeros(3), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]),
                              torch.tensor([1.0, 0.7, 0.2]), torch.tensor([2.0, 1.0, 3.0]))
    tau = torch.tensor([0.5, 0.25, 1.0], dtype=F64)
    r = fit_reward(comparisons, tau)
    z = r[comparisons.first] - r[comparisons.second]
    g = comparisons.count * (torch.sigmoid(z) - comparisons.pref)
    grad = tau * r
    grad.index_add_(0, comparisons.first, g)
    grad.index_add_(0, comparisons.second, -g)
    assert float(grad.abs().max()) < 1e-7 and float(r.abs().max()) > 0.1


def test_prior_precision_matches_the_offsets_count_dependent_variance():
    comparisons = Comparisons(torch.zeros(3), torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]),
                              torch.ones(3))
    tau = reward_precision(comparisons, 2.0, 16.0)          # c = 2, 2, 2 pair sides
    torch.testing.assert_close(tau, torch.full((3,), (1 + 16 / 2) / 4.0, dtype=F64))
    assert torch.equal(reward_precision(comparisons, None, 16.0), torch.zeros(3, dtype=F64))


def test_the_reward_prior_is_flat_whatever_the_pair_counts():
    """r̂'s prior has the offsets' σ but not their count dependence: a response in one pair
    and one in three get the same precision 1/σ²."""
    comparisons = Comparisons(torch.zeros(4), torch.tensor([0, 0, 0]), torch.tensor([1, 2, 3]),
                              torch.ones(3))                        # sides 3, 1, 1, 1
    torch.testing.assert_close(reward_prior(comparisons, 2.0),
                               torch.full((4,), 0.25, dtype=F64), rtol=0, atol=0)
    counted = reward_precision(comparisons, 2.0, 16.0)
    assert counted[1] > counted[0] > 0.25                             # (1 + 16/c)/σ²


def test_policy_weights_and_centering_by_hand():
    prompt = torch.tensor([0, 0, 1, 1, 1])
    logp = torch.log(torch.tensor([0.1, 0.3, 0.2, 0.2, 0.4], dtype=F64)) - 500.0  # no underflow
    weights = policy_weights(prompt, logp)
    torch.testing.assert_close(weights, torch.tensor([0.125, 0.375, 0.125, 0.125, 0.25],
                                                     dtype=F64), rtol=1e-12, atol=0)
    values = torch.tensor([1.0, 3.0, 0.0, 4.0, 2.0], dtype=F64)
    # prompt 0 mean 0.25·1 + 0.75·3 = 2.5; prompt 1 mean 0.25·0 + 0.25·4 + 0.5·2 = 2
    torch.testing.assert_close(centered(values, prompt, weights),
                               torch.tensor([-1.5, 0.5, -2.0, 2.0, 0.0], dtype=F64))


def test_bootstrap_spreads_the_prediction_over_resampled_prompts():
    policy, problem = random_loglinear_instance(2, beta=1.0, skew=2.0, num_states=6,
                                                num_actions=4, dim=2)
    a, comparisons, weights, reward = _population(policy, problem)
    coords, _ = score_coordinates(a)
    draws = bootstrap_gaps(coords, comparisons, weights, 2.0, 16.0, rounds=5, seed=1)
    assert set(draws) == {"dpo", "auxdpo"} and all(len(v) == 5 for v in draws.values())
    assert torch.tensor(draws["dpo"]).std() > 0                          # resampling matters


def test_scores_of_full_rank_leave_the_offsets_no_room():
    """K responses with K independent scores: every reward is representable, the offsets'
    null space is empty, and AuxDPO's step is DPO's with δ = 0."""
    policy, problem = random_loglinear_instance(3, beta=1.0, skew=1.0, num_states=2,
                                                num_actions=3, dim=3)
    _, comparisons, weights, reward = _population(policy, problem)
    coords = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    tau = reward_precision(comparisons, 2.0, 16.0)
    result = local_model(coords, comparisons, reward, weights, tau)
    assert result.null_dim == 0 and torch.equal(result.offsets, torch.zeros(6, dtype=F64))
    assert torch.equal(result.steps["auxdpo"], result.steps["dpo"])
    assert result.predicted_gap["dpo"] == pytest.approx(1.0, abs=1e-6)
