"""Exact-lab solvers against closed forms (Eq. 2, 5), identities and the paper's Prop. 2."""

import math

import numpy as np
import pytest
import torch

from auxdpo.geometry import base_weights, score_matrix
from auxdpo.harness.lab.policies import (
    FunctionPolicy,
    LogLinearPolicy,
    TabularPolicy,
    three_response_policy,
)
from auxdpo.harness.lab.problems import PreferenceProblem, prop2_problem, random_loglinear_instance
from auxdpo.harness.lab.solvers import (
    auxdpo_offset_basis,
    dpop_base_residual,
    population_loss,
    rlhf_objective,
    solve,
    solve_all,
    solve_rlhf,
    solve_rlhf_local,
)
from tolerance import assert_close, roundoff

D64 = torch.float64



def _tabular_instance(seed=0, S=2, A=4, path_only=True):
    gen = torch.Generator().manual_seed(seed)
    policy = TabularPolicy(S, A, torch.randn(S * A, generator=gen, dtype=D64))
    reward = torch.randn(S, A, generator=gen, dtype=D64)
    counts = torch.zeros(S, A, A, dtype=D64)
    for s in range(S):
        for a in range(A - 1):  # a path a0–a1–…: the sparsest connected pair graph
            counts[s, a, a + 1] = 1.0 + s + a
        if not path_only:
            counts[s] += torch.rand(A, A, generator=gen, dtype=D64)
    rho = torch.tensor([0.3, 0.7], dtype=D64)[:S] if S == 2 else torch.ones(S, dtype=D64) / S
    return policy, PreferenceProblem(rho, reward, counts, 2.5)


def _closed_form(policy, problem):
    """π_ref·exp(r*/β)/Z (paper Eq. 2)."""
    unnorm = policy.probs(policy.theta0) * torch.exp(problem.reward / problem.beta)
    return unnorm / unnorm.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("path_only", [True, False])
def test_tabular_dpo_and_rlhf_recover_the_closed_form(path_only):
    policy, problem = _tabular_instance(path_only=path_only)
    target = _closed_form(policy, problem)
    for sol in (solve("dpo", policy, problem), solve("auxdpo", policy, problem),
                solve_rlhf(policy, problem)):
        assert_close(policy.probs(sol.theta), target, ops=1e3)


def test_losses_at_base_are_log2_or_ipo_constant():
    """At θ = θ₀, h = 0: DPO/AuxDPO/DPOP pay log 2 per unit weight, IPO pays 1/(4β²)."""
    policy, problem = random_loglinear_instance(0, beta=3.0, skew=1.0, num_states=3,
                                                num_actions=4, dim=2)
    total = float(problem.pair_table().weight.sum())
    for method in ("dpo", "auxdpo", "dpop"):
        value = population_loss(method, policy, problem, policy.theta0)
        assert float(value) == pytest.approx(total * math.log(2), rel=1e-13)
    ipo = population_loss("ipo", policy, problem, policy.theta0)
    assert float(ipo) == pytest.approx(total / (4 * 3.0 ** 2), rel=1e-13)
    # Hard labels: one pair, p = 1.
    hard = PreferenceProblem(torch.ones(1, dtype=D64), torch.tensor([[50.0, 0.0]], dtype=D64),
                             torch.tensor([[[0.0, 1.0], [0.0, 0.0]]], dtype=D64), 0.5)
    two = LogLinearPolicy(torch.tensor([[[1.0], [0.0]]], dtype=D64))
    assert float(population_loss("dpo", two, hard, two.theta0)) == pytest.approx(math.log(2))
    assert float(population_loss("ipo", two, hard, two.theta0)) == pytest.approx(1.0)


def test_population_loss_matches_an_independent_numpy_sum():
    policy, problem = random_loglinear_instance(1, beta=2.0, skew=0.5, num_states=2,
                                                num_actions=3, dim=2)
    theta = policy.theta0 + torch.tensor([0.3, -0.2], dtype=D64)
    logp, ref = policy.log_probs(theta).numpy(), policy.log_probs(policy.theta0).numpy()
    r, n, beta = problem.reward.numpy(), problem.counts.numpy(), 2.0
    expected = 0.0
    for s in range(2):
        for a in range(3):
            for b in range(3):
                if a == b:
                    continue
                p = 1 / (1 + np.exp(-(r[s, a] - r[s, b])))
                h = (logp[s, a] - ref[s, a]) - (logp[s, b] - ref[s, b])
                # Eq. 3 over ordered triplets: −n[p log σ(βh) + (1 − p) log σ(−βh)]
                expected += n[s, a, b] * (p * np.logaddexp(0, -beta * h)
                                          + (1 - p) * np.logaddexp(0, beta * h))
    assert float(population_loss("dpo", policy, problem, theta)) == pytest.approx(expected,
                                                                                 rel=1e-12)


@pytest.mark.parametrize("counts", [(1, 1, 1), (1, 1, 100), (100, 1, 1), (1, 100, 1),
                                    (1, 1, 1e6), (1e6, 1e-6, 1), (0, 1, 1), (3, 0, 7)])
@pytest.mark.parametrize("beta", [1.0, 10.0, 100.0])
def test_prop2_auxdpo_is_count_independent(counts, beta):
    """AuxDPO gives θ = −1/(2β) for every connected count vector; so does rlhf_local."""
    policy, problem = three_response_policy(), prop2_problem(beta, counts)
    sol = solve("auxdpo", policy, problem)
    assert float(sol.theta) == pytest.approx(-1 / (2 * beta), abs=1e-9 / beta)
    assert float(solve_rlhf_local(policy, problem).theta) == pytest.approx(-1 / (2 * beta),
                                                                           rel=1e-13)


@pytest.mark.parametrize("beta", [0.5, 10.0, 100.0])
def test_prop2_dpo_with_only_n31_pairs(beta):
    """Only (a3, a1) pairs: σ(−βθ) = σ(r*₃ − r*₁) = σ(−1) ⇒ θ_DPO = 1/β."""
    policy, problem = three_response_policy(), prop2_problem(beta, (0, 0, 5))
    assert float(solve("dpo", policy, problem).theta) == pytest.approx(1 / beta, rel=1e-9)


def test_prop2_exact_rlhf_first_order_condition():
    """J'(θ*) = 0 for the exact RLHF optimum; in 1-d, J(θ) = πᵀr* − β KL."""
    policy, problem = three_response_policy(), prop2_problem(10.0, (1, 1, 1))
    theta = solve_rlhf(policy, problem).theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(rlhf_objective(policy, problem, theta), theta)
    assert abs(float(grad)) < 1e-12
    # Second-order check: a local maximum.
    for eps in (1e-3, -1e-3):
        assert float(rlhf_objective(policy, problem, theta.detach() + eps)) < float(
            rlhf_objective(policy, problem, theta.detach()))


def test_loglinear_auxdpo_equals_local_rlhf_and_rlhf_is_stationary():
    """For log-linear classes AuxDPO's θ is exactly Eq. 5's (δ absorbs the misspecification)."""
    policy, problem = random_loglinear_instance(3, beta=5.0, skew=2.0, num_states=4,
                                                num_actions=6, dim=3)
    aux = solve("auxdpo", policy, problem)
    local = solve_rlhf_local(policy, problem)
    assert_close(aux.theta, local.theta, ops=100)
    A = score_matrix(policy.log_probs, policy.theta0)
    w = base_weights(problem.rho, policy.log_probs(policy.theta0))
    residual = float((A @ (w * aux.delta)).abs().max())               # δ ∈ N(A_ρ,θ₀)
    assert residual < roundoff(ops=1e3, scale=float(A.norm() * (w * aux.delta).norm()))
    rlhf = solve_rlhf(policy, problem)
    theta = rlhf.theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(rlhf_objective(policy, problem, theta), theta)
    assert float(grad.norm()) < 1e-10
    basis = auxdpo_offset_basis(policy, problem)
    assert basis.shape == (24, 24 - 3 - 4)
    # Sums of 6 entries of an orthonormal basis (entries O(1) by construction).
    assert float(basis.reshape(4, 6, -1).sum(dim=1).abs().max()) < roundoff(ops=1e3, scale=1)


def test_prop2_failure_modes_and_data_sensitivity():
    """n31-dominant counts at large β: DPO's θ > 0 (all three failures); n12-dominant: θ < 0."""
    from auxdpo.harness.lab.experiments import FAILURE_MODES, prop2

    bad = prop2(100.0, (1, 1, 1000))
    assert bad["theta"]["dpo"] > 0
    assert bad["failures"]["dpo"] == list(FAILURE_MODES)
    assert bad["reward"]["dpo"] < bad["reward"]["base"] == pytest.approx(1.0)
    for method in ("auxdpo", "rlhf", "rlhf_local", "base"):
        assert bad["failures"][method] == []
    good = prop2(100.0, (1000, 1, 1))
    assert good["theta"]["dpo"] < 0 and good["failures"]["dpo"] == []


def test_dpop_certificate_and_lambda_zero():
    """λ = 0 makes DPOP exactly DPO; at λ = 50 θ₀ is certified and is a 1-d minimum."""
    policy, problem = three_response_policy(), prop2_problem(10.0, (1, 1, 100))
    dpo = solve("dpo", policy, problem)
    dpop0 = solve("dpop", policy, problem, dpop_lambda=0.0)
    assert float(dpop0.theta) == pytest.approx(float(dpo.theta), abs=1e-10)
    assert dpop_base_residual(policy, problem, 50.0) < 1e-9
    assert dpop_base_residual(policy, problem, 0.0) > 1e-3
    sol = solve("dpop", policy, problem, dpop_lambda=50.0)
    assert sol.status == "certified" and float(sol.theta) == 0.0
    f0 = float(population_loss("dpop", policy, problem, sol.theta))
    for eps in (1e-4, -1e-4, 1e-2, -1e-2):
        assert float(population_loss("dpop", policy, problem, sol.theta + eps)) > f0


def test_function_policy_gives_the_same_solutions():
    policy, problem = random_loglinear_instance(4, beta=4.0, skew=1.0, num_states=2,
                                                num_actions=4, dim=2)
    generic = FunctionPolicy(policy.log_probs, policy.theta0)
    for method in ("dpo", "ipo", "auxdpo"):
        assert_close(solve(method, generic, problem).theta,
                     solve(method, policy, problem).theta, ops=100)


def test_solve_all_gap_closed_on_one_loglinear_instance():
    policy, problem = random_loglinear_instance(0, beta=10.0, skew=3.0)
    sols = solve_all(policy, problem)
    j0, j_star = sols["base"].objective, sols["rlhf"].objective
    gain = (float(rlhf_objective(policy, problem, sols["auxdpo"].theta)) - j0) / (j_star - j0)
    assert gain > 0.99
    assert all(s.status in ("converged", "closed_form", "certified") for s in sols.values())


def test_bad_input_gets_clear_errors():
    rho, reward = torch.ones(1, dtype=D64), torch.zeros(1, 3, dtype=D64)
    counts = torch.ones(1, 3, 3, dtype=D64)
    with pytest.raises(ValueError, match="counts must be non-negative"):
        PreferenceProblem(rho, reward, -counts, 1.0)
    with pytest.raises(ValueError, match="reward must have shape"):
        PreferenceProblem(rho, torch.zeros(3, dtype=D64), counts, 1.0)
    with pytest.raises(ValueError, match="beta"):
        PreferenceProblem(rho, reward, counts, 0.0)
    with pytest.raises(ValueError, match="beta"):
        PreferenceProblem(rho, reward, counts, float("nan"))
    with pytest.raises(ValueError, match="reward must be finite"):
        PreferenceProblem(rho, torch.tensor([[0.0, float("nan"), 1.0]], dtype=D64), counts, 1.0)
    with pytest.raises(ValueError, match="rho"):
        PreferenceProblem(torch.tensor([0.5], dtype=D64), reward, counts, 1.0)
    with pytest.raises(ValueError, match="at least one pair"):
        PreferenceProblem(rho, reward, torch.eye(3, dtype=D64)[None], 1.0)
    with pytest.raises(ValueError, match="counts"):
        prop2_problem(1.0, (1, -1, 1))
    with pytest.raises(ValueError, match="unknown method"):
        solve("kto", three_response_policy(), prop2_problem(1.0))
    with pytest.raises(ValueError, match="policy is defined on"):
        solve("dpo", TabularPolicy(1, 4), prop2_problem(1.0))
    with pytest.raises(ValueError, match="not normalised"):
        FunctionPolicy(lambda t: torch.zeros(1, 3, dtype=D64) + t.sum(), torch.zeros(1))
