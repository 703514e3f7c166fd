"""The prior on AuxDPO's offsets in the full-batch solver, soft labels from ratings, and
groups of comparisons that keep the misspecification (the finite-sample grid of
docs/results.md, "The prior on the offsets")."""

import json
import subprocess
import sys

import torch

from auxdpo.harness.oracle.fullbatch import empirical_problem, response_weights
from auxdpo.harness.oracle.sampling import (
    PairSample,
    sample_pairs,
)
from auxdpo.harness.oracle.solvers import (
    NullProjector,
    fit_method,
    forward_score_matrix,
    pair_loss_closure,
)
from oracle_fixtures import loglinear
from tolerance import assert_close

DT = torch.float64


def _loglinear(seed=0):
    return loglinear(seed, S=3, nA=6, reward_scale=2.0)            # on-policy counts


def _solve(sample, log_probs, theta0, rho, nA, prior, beta=3.0, max_iter=300):
    problem = empirical_problem(sample, rho, nA, beta)
    A = forward_score_matrix(log_probs, theta0)
    omega, support = response_weights(sample, log_probs(theta0), "prompt")
    fit = fit_method("auxdpo", log_probs, problem, theta0, A=A, null_weights=omega,
                     support=support, delta_prior=prior, max_iter=max_iter)
    return fit, problem, A, omega, support


def test_prior_solution_is_stationary_in_the_null_space():
    """At the answer, the projected δ-gradient of mean loss + (λ/2)‖δ‖² vanishes and δ stays
    in the constraint's null space: the solver minimises the objective it claims."""
    log_probs, theta0, reward, rho, counts = _loglinear()
    sample = sample_pairs(counts, reward, 60, torch.Generator().manual_seed(1))
    prior = 1.0 / len(sample)                                       # τ = 1
    fit, problem, A, omega, support = _solve(sample, log_probs, theta0, rho, 6, prior)
    assert not fit.capped
    loss = pair_loss_closure("auxdpo", log_probs, problem, theta0)
    project = NullProjector(A, omega, 3, support)

    def projected_gradient(theta, delta):
        delta = delta.clone().requires_grad_(True)
        value = loss(theta, delta) + 0.5 * prior * delta.pow(2).sum()
        return project(torch.autograd.grad(value, delta)[0])

    start = projected_gradient(theta0, torch.zeros_like(fit.delta))
    # the solver stops at a preconditioned gradient of 1e-8; the start's is O(0.1)
    assert float(projected_gradient(fit.theta, fit.delta).abs().max()) < 1e-5 * float(
        start.abs().max())
    assert_close((A * omega) @ fit.delta, torch.zeros(2, dtype=DT), ops=1e4,
                 scale=float(A.norm() * fit.delta.norm()))
    assert float(fit.delta[~support].abs().max()) == 0.0
    assert float(fit.delta.abs().max()) > 1e-3                      # the offsets do act


def test_prior_keeps_separable_hard_labels_finite():
    """Every response in one pair, hard labels: without a prior the offsets run off (the
    loss reaches 0 with huge δ); with one they obey the bound the objective gives,
    (τ/2n)δ_k² ≤ objective(θ₀, 0) = log 2."""
    log_probs, theta0, _, rho, _ = _loglinear()
    sample = PairSample(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 2, 1, 3]),
                        torch.tensor([1, 3, 4, 5]))
    free, *_ = _solve(sample, log_probs, theta0, rho, 6, 0.0, max_iter=100)
    n, tau = len(sample), 1.0
    held, *_ = _solve(sample, log_probs, theta0, rho, 6, tau / n)
    bound = (2 * n * torch.log(torch.tensor(2.0)) / tau).sqrt()
    assert not held.capped and float(held.delta.abs().max()) <= float(bound)
    assert free.objective < 1e-8 and float(free.delta.abs().max()) > 100 * float(bound)


def test_a_strong_prior_is_dpo():
    log_probs, theta0, reward, rho, counts = _loglinear()
    sample = sample_pairs(counts, reward, 200, torch.Generator().manual_seed(3))
    strong, problem, A, _, _ = _solve(sample, log_probs, theta0, rho, 6, 1e7 / len(sample))
    dpo = fit_method("dpo", log_probs, problem, theta0, A=A)
    assert not dpo.capped
    step = float((dpo.theta - theta0).norm())
    assert float((strong.theta - dpo.theta).norm()) < 1e-3 * step


def test_soft_labels_fold_into_win_shares():
    sample = PairSample(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([1, 2]),
                        pref=torch.tensor([0.7, 0.9], dtype=DT))
    problem = empirical_problem(sample, torch.tensor([1.0], dtype=DT), 3, beta=1.0)
    assert_close(problem.counts[0], torch.tensor([[0, 0.35, 0], [0.15, 0, 0.45],
                                                  [0, 0.05, 0]], dtype=DT), ops=10)


def test_cli_runs_the_prior_variants_and_reports_the_estimated_scale(tmp_path):
    cmd = [sys.executable, "-m", "auxdpo", "oracle", "--regime", "finite", "--finite-solver",
           "full-batch", "--pairs", "300", "--methods", "dpo", "auxdpo",
           "--aux-delta-scale", "em", "none", "1", "--aux-delta-half-count", "none", "4",
           "--responses-per-prompt", "3", "--sampler", "disagreeing", "--labels", "soft",
           "--seeds", "1", "--rm-steps", "0", "--prompts", "3", "--heldout", "1",
           "--vocab-size", "3", "--response-length", "2", "--hidden", "8", "--layers", "1",
           "--warmup-steps", "0", "--max-iter", "30", "--quiet", "--out", str(tmp_path / "r")]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    names = {r["method"] for r in rows}
    assert {"dpo", "auxdpo-sigmaEM", "auxdpo-sigmaEM-half4", "auxdpo-noprior",
            "auxdpo-sigma1-half4"} <= names
    assert "iw-dpo" not in names                  # unknown sampling distribution: no row
    em = [r for r in rows if r["method"] == "auxdpo-sigmaEM"]
    assert em and all(r["delta_scale"] > 0 for r in em)
    assert all(0.0 <= r["disagree_share"] <= 1.0 for r in rows)
