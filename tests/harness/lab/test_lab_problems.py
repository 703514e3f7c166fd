"""Lab preference problems: the folded pair table, Prop. 2's instance, random instances."""

import math

import pytest
import torch

from auxdpo.harness.lab.problems import PreferenceProblem, prop2_problem, random_loglinear_instance

D64 = torch.float64


def test_pair_table_folds_both_orders_with_btl_labels():
    """n(0,0,1) = 2 and n(0,1,0) = 3 fold into one pair of weight 5; label σ(r₀ − r₁)."""
    counts = torch.zeros(1, 3, 3, dtype=D64)
    counts[0, 0, 1], counts[0, 1, 0], counts[0, 2, 1] = 2.0, 3.0, 4.0
    reward = torch.tensor([[1.0, 0.0, 2.0]], dtype=D64)
    table = PreferenceProblem(torch.ones(1, dtype=D64), reward, counts, 1.0).pair_table()
    assert table.state.tolist() == [0, 0]
    assert table.first.tolist() == [0, 1] and table.second.tolist() == [1, 2]
    assert table.weight.tolist() == [5.0, 4.0]
    assert table.pref_prob[0].item() == pytest.approx(1 / (1 + math.exp(-1.0)), rel=1e-13)
    assert table.pref_prob[1].item() == pytest.approx(1 / (1 + math.exp(2.0)), rel=1e-13)


def test_prop2_problem_places_its_counts():
    problem = prop2_problem(10.0, (1, 2, 5))
    assert problem.reward.tolist() == [[1.0, 2.0, 0.0]] and problem.beta == 10.0
    table = problem.pair_table()
    weights = {(a, b): w for a, b, w in zip(table.first.tolist(), table.second.tolist(),
                                            table.weight.tolist())}
    assert weights == {(0, 1): 1.0, (1, 2): 2.0, (0, 2): 5.0}       # n31 folds onto (a1, a3)
    with pytest.raises(ValueError, match="three numbers"):
        prop2_problem(1.0, (1, 1))


def test_random_instance_is_seeded_normalised_and_on_the_policy():
    policy, problem = random_loglinear_instance(3, beta=2.0, skew=1.0, num_states=4,
                                                num_actions=5, dim=2)
    again, same = random_loglinear_instance(3, beta=2.0, skew=1.0, num_states=4,
                                            num_actions=5, dim=2)
    assert torch.equal(problem.counts, same.counts) and torch.equal(policy.theta0, again.theta0)
    assert (problem.num_states, problem.num_actions, policy.dim) == (4, 5, 2)
    assert problem.rho.sum().item() == pytest.approx(1.0, rel=1e-13)
    assert torch.all(torch.diagonal(problem.counts, dim1=1, dim2=2) == 0)
    problem.check_policy(policy)
    other, _ = random_loglinear_instance(4, beta=2.0, skew=1.0, num_states=4, num_actions=5,
                                         dim=2)
    assert not torch.equal(other.theta0, policy.theta0)


def test_check_policy_names_both_shapes():
    problem = prop2_problem(1.0)
    policy, _ = random_loglinear_instance(0, beta=1.0, skew=0.0, num_states=2, num_actions=3)
    with pytest.raises(ValueError, match="2×3, the problem on 1×3"):
        problem.check_policy(policy)
