"""Lab policy classes: log-probs, closed-form score and curvature, the checks on inputs."""

import math

import pytest
import torch

from auxdpo.harness.lab.policies import (
    FunctionPolicy,
    LogLinearPolicy,
    TabularPolicy,
    three_response_policy,
)
from tolerance import assert_close

D64 = torch.float64


def test_three_response_policy_by_hand():
    """π_θ ∝ [e^θ, e^−θ, 1]: at θ = log 2 the weights are [2, 1/2, 1], total 7/2."""
    policy = three_response_policy()
    assert policy.dim == 1 and (policy.num_states, policy.num_actions) == (1, 3)
    probs = policy.probs(torch.tensor([math.log(2.0)], dtype=D64))
    assert_close(probs, torch.tensor([[4 / 7, 1 / 7, 2 / 7]], dtype=D64), ops=100, scale=1.0)
    assert_close(policy.probs(policy.theta0), torch.full((1, 3), 1 / 3, dtype=D64), ops=100,
                 scale=1.0)
    assert float(three_response_policy(0.25).theta0) == 0.25


def test_loglinear_score_and_curvature_equal_autograd():
    """score = ∂ log π / ∂θ (m × d); curvature(θ, w) = Σ w(s,a) ∇² log π(a|s)."""
    gen = torch.Generator().manual_seed(0)
    policy = LogLinearPolicy(torch.randn(2, 4, 3, generator=gen, dtype=D64))
    theta = torch.randn(3, generator=gen, dtype=D64)
    weights = torch.randn(2, 4, generator=gen, dtype=D64)
    jac = torch.autograd.functional.jacobian(lambda t: policy.log_probs(t).reshape(-1), theta)
    assert_close(policy.score(theta), jac, ops=1e3)
    hess = torch.autograd.functional.hessian(
        lambda t: (weights * policy.log_probs(t)).sum(), theta)
    assert_close(policy.curvature(theta, weights), hess, ops=1e3)


def test_tabular_policy_is_the_row_softmax_of_its_logit_table():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]], dtype=D64)
    policy = TabularPolicy(2, 2, logits.reshape(-1))
    assert policy.dim == 4
    assert_close(policy.probs(policy.theta0),
                 torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=D64), ops=100, scale=1.0)
    # the one-hot log-linear class gives the same values
    onehot = LogLinearPolicy(torch.eye(4, dtype=D64).reshape(2, 2, 4), logits.reshape(-1))
    assert_close(policy.log_probs(policy.theta0), onehot.log_probs(onehot.theta0), ops=100)


def test_function_policy_wraps_a_function_and_checks_it():
    base = three_response_policy()
    wrapped = FunctionPolicy(base.log_probs, torch.zeros(1, dtype=D64))
    theta = torch.tensor([0.7], dtype=D64)
    assert wrapped.dim == 1 and wrapped.num_actions == 3
    assert_close(wrapped.log_probs(theta), base.log_probs(theta), ops=10)
    assert_close(wrapped.score(theta), base.score(theta), ops=100)   # generic path: autograd
    with pytest.raises(ValueError, match="shape"):
        FunctionPolicy(lambda t: torch.zeros(3, dtype=D64), torch.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        FunctionPolicy(lambda t: torch.full((1, 2), float("nan"), dtype=D64), torch.zeros(1))


def test_loglinear_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        LogLinearPolicy(torch.zeros(3, 2, dtype=D64))
    with pytest.raises(ValueError, match="at least 2 actions"):
        LogLinearPolicy(torch.zeros(1, 1, 2, dtype=D64))
    with pytest.raises(ValueError, match="theta0"):
        LogLinearPolicy(torch.zeros(1, 3, 2, dtype=D64), torch.zeros(3, dtype=D64))
    with pytest.raises(ValueError, match="num_actions"):
        TabularPolicy(1, 1)
