"""The oracle's exact pieces against the lab: a log-linear policy written as a one-layer network.

π_θ(a|s) ∝ exp(Linear(φ(s, a))) with a bias-free ``nn.Linear(d, 1)`` evaluated through
``torch.func.functional_call`` (the way the oracle evaluates transformers) is the lab's
:class:`LogLinearPolicy` with the same features, so both must agree on J (Eq. 1), on the
RLHF maximiser, on the local RLHF step (Eq. 5), on A_θ₀, and on every method's minimiser.
"""

import pytest
import torch

from auxdpo.geometry import base_weights, score_matrix
from auxdpo.harness.lab.policies import LogLinearPolicy
from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.lab.solvers import rlhf_objective as lab_objective
from auxdpo.harness.lab.solvers import solve, solve_rlhf, solve_rlhf_local
from auxdpo.harness.oracle.solvers import (
    NullProjector,
    fit_auxdpo_relinearised,
    fit_method,
    fit_rlhf,
    forward_score_matrix,
    local_rlhf_theta,
    rlhf_objective,
)
from tolerance import assert_close, roundoff

DT = torch.float64



def _instance(beta=2.0, seed=0, S=3, nA=5, d=2):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(S, nA, d, generator=gen, dtype=DT)
    theta0 = 0.3 * torch.randn(d, generator=gen, dtype=DT)
    layer = torch.nn.Linear(d, 1, bias=False).to(DT)

    def log_probs(theta):                       # one-layer network, flat θ = its weight
        logits = torch.func.functional_call(layer, {"weight": theta.view(1, d)}, (features,))
        return torch.log_softmax(logits.squeeze(-1), dim=-1)

    return log_probs, LogLinearPolicy(features, theta0), \
        _on_policy_problem(log_probs, theta0, gen, S, nA, beta), theta0


def _on_policy_problem(log_probs, theta0, gen, S, nA, beta):
    """Random r*, ρ = (0.5, 0.3, 0.2) and on-policy pair counts ρ·π₀·π₀ (normalised)."""
    reward = torch.randn(S, nA, generator=gen, dtype=DT)
    rho = torch.tensor([0.5, 0.3, 0.2], dtype=DT)[:S]
    pi0 = log_probs(theta0).exp()
    counts = rho[:, None, None] * pi0[:, :, None] * pi0[:, None, :]
    counts = counts * (1 - torch.eye(nA, dtype=DT))
    return PreferenceProblem(rho, reward, counts / counts.sum(), beta)


def test_objective_matches_lab_at_random_points():
    log_probs, policy, problem, theta0 = _instance()
    logp0 = log_probs(theta0)
    for k in range(3):
        theta = theta0 + torch.randn(2, generator=torch.Generator().manual_seed(k), dtype=DT)
        ours = rlhf_objective(log_probs(theta), logp0, problem.reward, problem.rho, problem.beta)
        assert float(ours) == pytest.approx(float(lab_objective(policy, problem, theta)),
                                            rel=1e-12, abs=1e-12)


def test_score_matrix_forward_mode_equals_reverse_mode():
    log_probs, policy, _, theta0 = _instance()
    ours = forward_score_matrix(log_probs, theta0, chunk_size=1)
    assert_close(ours, score_matrix(policy.log_probs, theta0), ops=100)


@pytest.mark.parametrize("beta,restarts", [(0.5, 1), (5.0, 1), (5.0, 3)])
def test_rlhf_maximiser_and_local_step_match_lab(beta, restarts):
    log_probs, policy, problem, theta0 = _instance(beta=beta)
    A = forward_score_matrix(log_probs, theta0)
    local = local_rlhf_theta(A, problem.rho, log_probs(theta0), problem.reward, beta, theta0)
    assert_close(local, solve_rlhf_local(policy, problem).theta, ops=1e3)
    ours = fit_rlhf(log_probs, problem, theta0, A=A, starts=[theta0, local], restarts=restarts)
    lab = solve_rlhf(policy, problem)
    assert torch.allclose(ours.theta, lab.theta, atol=1e-6)
    assert ours.objective == pytest.approx(lab.objective, abs=1e-10)


@pytest.mark.parametrize("method,restarts", [("dpo", 1), ("ipo", 1), ("auxdpo", 1),
                                              ("dpo", 3), ("auxdpo", 3)])
def test_method_minimisers_match_lab(method, restarts):
    log_probs, policy, problem, theta0 = _instance(beta=3.0)
    A = forward_score_matrix(log_probs, theta0)
    ours = fit_method(method, log_probs, problem, theta0, A=A, max_iter=500, restarts=restarts)
    lab = solve(method, policy, problem)
    assert ours.objective == pytest.approx(lab.objective, abs=1e-9)
    assert torch.allclose(ours.theta, lab.theta, atol=1e-5)


def test_auxdpo_offsets_stay_in_the_null_space():
    log_probs, _, problem, theta0 = _instance(beta=3.0)
    A = forward_score_matrix(log_probs, theta0)
    fit = fit_method("auxdpo", log_probs, problem, theta0, A=A)
    weights = base_weights(problem.rho, log_probs(theta0))
    assert fit.delta.abs().max() > 1e-3                        # δ is used, not trivially 0
    # Residuals err relative to the norms multiplied, not to their own (zero) size.
    weighted = A * weights[None]
    assert float(((weighted @ fit.delta)).abs().max()) < roundoff(
        ops=1e3, scale=float(weighted.norm() * fit.delta.norm()))
    assert float(fit.delta.view(3, 5).sum(1).abs().max()) < roundoff(
        fit.delta, ops=100)                                     # per-state sums are 0


def test_null_projector_is_the_orthogonal_projector():
    log_probs, _, problem, theta0 = _instance()
    A = forward_score_matrix(log_probs, theta0)
    weights = base_weights(problem.rho, log_probs(theta0))
    project = NullProjector(A, weights, 3)
    assert project.null_dim == 15 - 2 - 3
    c = torch.randn(15, generator=torch.Generator().manual_seed(1), dtype=DT)
    once = project(c)
    assert_close(project(once), once, ops=1e3)                 # idempotent
    assert abs(float((c - once) @ once)) < roundoff(
        ops=1e3, scale=float(c.norm() * once.norm()))            # orthogonal


def test_global_penalty_mode_reaches_the_projection_solution_for_any_lambda():
    """In the population regime AuxDPO fits r* exactly (zero excess loss) with A_ρδ = 0, so
    loss + λ‖A_ρδ‖² has the same minimiser for every λ > 0: the lab's projected AuxDPO."""
    log_probs, policy, problem, theta0 = _instance(beta=3.0)
    A = forward_score_matrix(log_probs, theta0)
    exact = solve("auxdpo", policy, problem)
    for lam in (1e-2, 1e2):
        fit = fit_method("auxdpo", log_probs, problem, theta0, A=A, mode="global",
                         lambda_null=lam, max_iter=500)
        assert torch.allclose(fit.theta, exact.theta, atol=1e-5)
        assert fit.objective == pytest.approx(exact.objective, abs=1e-8)


def test_rlhf_gradient_is_A_rho_at_theta_times_reward_residual():
    """∇J(θ) = A_ρ,θ (r* − r_θ), r_θ = β log π_θ/π₀: the identity behind relinearised AuxDPO
    (its fixed points are RLHF stationary points), checked at θ₀ and away from it."""
    log_probs, _, problem, theta0 = _instance(beta=0.7)
    logp0 = log_probs(theta0).detach()
    for k in range(3):
        theta = theta0 + k * torch.randn(2, generator=torch.Generator().manual_seed(k), dtype=DT)
        theta = theta.clone().requires_grad_(True)
        J = rlhf_objective(log_probs(theta), logp0, problem.reward, problem.rho, problem.beta)
        (grad,) = torch.autograd.grad(J, theta)
        with torch.no_grad():
            logp = log_probs(theta)
            A_rho = forward_score_matrix(log_probs, theta.detach()) * base_weights(
                problem.rho, logp)[None]
            residual = problem.reward - problem.beta * (logp - logp0)
        assert_close(grad, A_rho @ residual.reshape(-1), ops=1e3)


@pytest.mark.parametrize("beta,shrink", [(3.0, 1e-3), (1.0, 0.05)])
def test_relinearised_auxdpo_reaches_the_exact_rlhf_maximiser(beta, shrink):
    """With θ₀'s null space AuxDPO stops at the local answer (≠ θ_RLHF); re-solved with the
    null space at its own last answer it converges to the lab's exact maximiser, its error
    shrinking every round (by ≈ 0.2 per round at β = 3, ≈ 0.55 at β = 1). It is a fixed-point
    iteration, not a global method: at β ≤ 0.5 this instance's optimum lies at |θ| ≈ 20
    (an almost deterministic policy) and the rounds do not converge (docs/oracle.md)."""
    log_probs, policy, problem, theta0 = _instance(beta=beta)
    A = forward_score_matrix(log_probs, theta0)
    exact = solve_rlhf(policy, problem).theta
    plain = fit_method("auxdpo", log_probs, problem, theta0, A=A, max_iter=500)
    relin = fit_auxdpo_relinearised(log_probs, problem, theta0, A=A, rounds=6, max_iter=500)
    assert len(relin.path) == 6 and torch.equal(relin.path[0], plain.theta)   # round 1 = AuxDPO
    assert torch.allclose(plain.theta, solve("auxdpo", policy, problem).theta, atol=1e-5)
    assert float((plain.theta - exact).norm()) > 1e-3          # the local answer is off
    errors = [float((t - exact).norm()) for t in relin.path]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < shrink * errors[0]
    assert torch.equal(relin.theta, relin.path[-1])
    with torch.no_grad():                                      # its δ: the last null space
        weights = base_weights(problem.rho, log_probs(relin.path[-2]))
        A_last = forward_score_matrix(log_probs, relin.path[-2])
    weighted = A_last * weights[None]
    assert float((weighted @ relin.delta).abs().max()) < roundoff(
        ops=1e3, scale=float(weighted.norm() * relin.delta.norm()))


def test_relinearise_config_is_checked():
    from auxdpo.harness.oracle.cells import method_names
    from auxdpo.harness.oracle.runner import OracleConfig

    with pytest.raises(ValueError, match="relinearise"):
        OracleConfig(relinearise=-1)
    with pytest.raises(ValueError, match="population regime and method auxdpo"):
        OracleConfig(regime="finite", relinearise=2)
    with pytest.raises(ValueError, match="population regime and method auxdpo"):
        OracleConfig(methods=["dpo"], relinearise=2)
    assert method_names(OracleConfig(methods=["dpo", "auxdpo"], relinearise=3))[-1] == (
        "auxdpo-relin", "auxdpo", {"relinearise": 3})
    assert "auxdpo-relin" not in [n for n, _, _ in method_names(OracleConfig())]


def _bilinear_instance(beta=5.0, seed=3, S=3, nA=5, k=3):
    """A LoRA-like parametrisation of the log-linear policy: w = u ⊙ v, θ = (u, v), started
    at v = 0 (so ∂/∂u = 0 there, as for LoRA's A at B = 0); any w is reachable."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(S, nA, k, generator=gen, dtype=DT)
    theta0 = torch.cat([torch.randn(k, generator=gen, dtype=DT), torch.zeros(k, dtype=DT)])

    def log_probs(theta):
        w = theta[:k] * theta[k:]
        return torch.log_softmax(features @ w, dim=-1)

    return log_probs, LogLinearPolicy(features, torch.zeros(k, dtype=DT)), \
        _on_policy_problem(log_probs, theta0, gen, S, nA, beta), theta0


def test_restarted_rlhf_solve_reaches_the_optimum_of_a_bilinear_parametrisation():
    """At v = 0 the Fisher matrix is singular along u (the first round's preconditioner is
    floored); the later rounds re-centre and re-precondition at the current point. The result
    is the log-linear optimum over w = u ⊙ v, the lab's exact answer. (On this small instance
    one round converges as well; on the tokens task's LoRA cells the restarts are what gets
    further, see docs/results.md.)"""
    log_probs, policy, problem, theta0 = _bilinear_instance()
    A = forward_score_matrix(log_probs, theta0)
    assert A[:3].abs().max() == 0                            # ∂/∂u vanishes at v = 0
    lab = solve_rlhf(policy, problem)
    fit = fit_rlhf(log_probs, problem, theta0, A=A, starts=[theta0], max_iter=40,
                   floor=1e-3, restarts=5, restart_floor=1e-6)
    assert fit.objective == pytest.approx(lab.objective, abs=1e-9)
    w = fit.theta[:3] * fit.theta[3:]
    assert torch.allclose(w, lab.theta, atol=1e-5)
