"""Lab objectives: the assembled gradients and Hessians equal autograd's; closed values."""

import math

import pytest
import torch

from auxdpo.harness.lab.objectives import PairLossObjective, RLHFObjective
from auxdpo.harness.lab.policies import three_response_policy
from auxdpo.harness.lab.problems import prop2_problem, random_loglinear_instance
from tolerance import assert_close

D64 = torch.float64


def _instance():
    return random_loglinear_instance(1, beta=3.0, skew=1.0, num_states=2, num_actions=4, dim=3)


@pytest.mark.parametrize("method", ["dpo", "ipo", "dpop"])
def test_pair_loss_derivatives_equal_autograd(method):
    policy, problem = _instance()
    objective = PairLossObjective(method, policy, problem, dpop_lambda=2.0)
    x = policy.theta0 + torch.tensor([0.3, -0.2, 0.5], dtype=D64)
    value, grad, hess = objective.derivatives(x)
    assert_close(value, objective.value(x), ops=1e3)
    assert_close(grad, torch.autograd.functional.jacobian(objective.value, x), ops=1e3)
    assert_close(hess, torch.autograd.functional.hessian(objective.value, x), ops=1e3)


def test_auxdpo_derivatives_in_theta_and_offset_coordinates_equal_autograd():
    policy, problem = _instance()
    m = problem.num_states * problem.num_actions
    basis = torch.randn(m, 2, generator=torch.Generator().manual_seed(2), dtype=D64)
    objective = PairLossObjective("auxdpo", policy, problem, basis=basis)
    x = torch.cat([policy.theta0 + 0.1, torch.tensor([0.4, -0.3], dtype=D64)])
    value, grad, hess = objective.derivatives(x)
    assert grad.shape == (5,) and hess.shape == (5, 5)
    assert_close(grad, torch.autograd.functional.jacobian(objective.value, x), ops=1e3)
    assert_close(hess, torch.autograd.functional.hessian(objective.value, x), ops=1e3)


def test_dpo_loss_at_the_base_policy_is_total_count_times_log2():
    """At θ₀ every implicit reward margin is 0, so each pair's loss is log 2."""
    policy, problem = three_response_policy(), prop2_problem(10.0, (1, 2, 5))
    value = PairLossObjective("dpo", policy, problem).value(policy.theta0)
    assert float(value) == pytest.approx(8 * math.log(2.0), rel=1e-13)


def test_rlhf_objective_is_minus_expected_reward_at_base_and_matches_autograd():
    policy, problem = three_response_policy(), prop2_problem(10.0)
    objective = RLHFObjective(policy, problem)
    # uniform π₀, r* = [1, 2, 0], KL = 0 ⇒ −J = −(1 + 2 + 0)/3 = −1
    assert float(objective.value(policy.theta0)) == pytest.approx(-1.0, rel=1e-13)
    theta = torch.tensor([0.4], dtype=D64)
    value, grad, hess = objective.derivatives(theta)
    assert_close(value, objective.value(theta), ops=100)
    assert_close(grad, torch.autograd.functional.jacobian(objective.value, theta), ops=1e3)
    assert_close(hess, torch.autograd.functional.hessian(objective.value, theta), ops=1e3)
