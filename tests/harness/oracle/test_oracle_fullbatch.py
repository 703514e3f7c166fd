"""The full-batch finite-sample solver: empirical problems, constraint weights, samplers, and
the convergence of response-keyed AuxDPO to its population answer on the lab's log-linear
class (a one-layer network, as in test_oracle_solvers.py)."""

import json
import subprocess
import sys

import pytest
import torch

from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.finite import finite_loss
from auxdpo.harness.oracle.fullbatch import (
    empirical_problem,
    fit_auxdpo_rows,
    importance_weights,
    occurrences,
    response_weights,
)
from auxdpo.harness.oracle.sampling import PairSample, sample_pairs
from auxdpo.harness.oracle.solvers import (
    NullProjector,
    fit_method,
    forward_score_matrix,
    pair_loss_closure,
)
from oracle_fixtures import loglinear
from tolerance import assert_close

DT = torch.float64


def _sample(rows):
    s, w, l = (torch.tensor(c) for c in zip(*rows))
    return PairSample(s, w, l)


def _loglinear(seed=0):
    # A design far from on-policy: pair counts skewed log-normally, so that the responses'
    # marginal μ differs from π₀ and the constraint weightings disagree in the limit.
    return loglinear(seed, S=3, nA=5, skew=2.0)


def test_empirical_problem_folds_repeated_pairs_into_win_shares():
    # prompt 0: a0 ≻ a1 twice, a1 ≻ a0 once; prompt 1: a2 ≻ a0 once
    sample = _sample([(0, 0, 1), (0, 1, 0), (0, 0, 1), (1, 2, 0)])
    problem = empirical_problem(sample, torch.tensor([0.5, 0.5], dtype=DT), 3, beta=1.0)
    table = problem.pair_table()
    got = {(int(s), int(a), int(b)): (float(w), float(p)) for s, a, b, w, p in zip(*table)}
    assert got == {(0, 0, 1): (pytest.approx(0.75), pytest.approx(2 / 3)),
                   (1, 0, 2): (pytest.approx(0.25), pytest.approx(0.0))}


@pytest.mark.parametrize("method", ["dpo", "ipo", "auxdpo"])
def test_folded_empirical_loss_equals_the_mean_over_rows(method):
    """Σ_pairs n̂/n·soft loss = (1/n)Σ_i ℓ_i at any θ (and δ): the identity the solver rests on."""
    log_probs, theta0, reward, rho, counts = _loglinear()
    sample = sample_pairs(counts, reward, 500, torch.Generator().manual_seed(1))
    problem = empirical_problem(sample, rho, 5, beta=2.0)
    loss = pair_loss_closure(method, log_probs, problem, theta0, ipo_length=3)
    theta = theta0 + torch.tensor([0.4, -0.7], dtype=DT)
    delta = (torch.randn(15, generator=torch.Generator().manual_seed(2), dtype=DT)
             if method == "auxdpo" else None)
    rows = finite_loss(method, log_probs(theta), log_probs(theta0), sample, beta=2.0,
                       delta=delta, ipo_length=3)
    # two summation orders over 500 rows: round-off ≈ 500·ε relative; 1e-10 leaves room
    assert float(loss(theta, delta)) == pytest.approx(float(rows), rel=1e-10)


def test_response_weights_by_hand():
    # prompt 0 sides: a0 ×3, a1 ×2, a2 ×1; prompt 1: a0, a1
    sample = _sample([(0, 0, 1), (0, 0, 2), (0, 1, 0), (1, 0, 1)])
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=DT)
    assert occurrences(sample, 2, 3).tolist() == [3, 2, 1, 1, 1, 0]
    mult, support = response_weights(sample, probs.log(), "multiplicity")
    assert support.tolist() == [True] * 5 + [False]
    assert_close(mult, torch.tensor([3, 2, 1, 1, 1, 0], dtype=DT) / 8, ops=100)
    ref, _ = response_weights(sample, probs.log(), "reference")    # each prompt counts once
    want = torch.tensor([0.5, 0.3, 0.2, 0.1, 0.1, 0.0], dtype=DT)
    assert_close(ref, want / want.sum(), ops=100)
    prompt, _ = response_weights(sample, probs.log(), "prompt")
    want = torch.tensor([0.5, 0.3, 0.2, 0.5, 0.5, 0.0], dtype=DT)
    assert_close(prompt, want / want.sum(), ops=100)
    with pytest.raises(ValueError, match="null weights"):
        response_weights(sample, probs.log(), "uniform")


def test_importance_weights_are_one_on_policy_and_report_the_effective_size():
    _, _, reward, _, counts = _loglinear()
    sample = sample_pairs(counts, reward, 400, torch.Generator().manual_seed(0))
    weight, ess = importance_weights(sample, counts, counts)
    assert_close(weight, torch.ones(400, dtype=DT), ops=100)
    assert ess == pytest.approx(400.0, rel=1e-12)
    uniform = (1 - torch.eye(5, dtype=DT)).expand(3, 5, 5)
    weight, ess = importance_weights(sample, uniform, counts)
    assert ess < 400 and float(weight.sum() ** 2 / weight.pow(2).sum()) == pytest.approx(ess)


def test_null_projector_with_full_support_is_the_plain_projector():
    log_probs, theta0, _, rho, _ = _loglinear()
    A = forward_score_matrix(log_probs, theta0)
    weights = (rho[:, None] * log_probs(theta0).exp()).reshape(-1)
    c = torch.randn(15, generator=torch.Generator().manual_seed(3), dtype=DT)
    plain = NullProjector(A, weights, 3)
    full = NullProjector(A, weights, 3, torch.ones(15, dtype=torch.bool))
    assert full.null_dim == plain.null_dim
    assert_close(full(c), plain(c), ops=1e3)
    support = torch.ones(15, dtype=torch.bool)
    support[[2, 7]] = False
    part = NullProjector(A, weights, 3, support)
    delta = part(c)
    assert float(delta[[2, 7]].abs().max()) == 0.0
    assert_close((A * weights) @ delta, torch.zeros(2, dtype=DT), ops=1e3,
                 scale=float(A.norm() * c.norm()))
    assert_close(delta.view(3, 5).sum(1), torch.zeros(3, dtype=DT), ops=1e3,
                 scale=float(c.norm()))


def _fit(kind, log_probs, theta0, reward, rho, counts, n, beta=3.0):
    sample = sample_pairs(counts, reward, n, torch.Generator().manual_seed(7))
    problem = empirical_problem(sample, rho, 5, beta)
    A = forward_score_matrix(log_probs, theta0)
    omega, support = response_weights(sample, log_probs(theta0), kind)
    return fit_method("auxdpo", log_probs, problem, theta0, A=A, null_weights=omega,
                      support=support, max_iter=500).theta


def test_response_keyed_auxdpo_converges_to_population_auxdpo():
    """π₀-weighted constraints (reference, prompt) tend to the paper's population AuxDPO (the
    local RLHF solution's estimator) as n grows; the multiplicity weights of the paper's Monte
    Carlo sum tend to the population problem with the design's response marginal μ instead,
    which differs when the data do not come from π₀."""
    log_probs, theta0, reward, rho, counts = _loglinear()
    beta = 3.0
    A = forward_score_matrix(log_probs, theta0)
    population = PreferenceProblem(rho, reward, counts, beta)
    target = fit_method("auxdpo", log_probs, population, theta0, A=A, max_iter=500).theta
    mu = counts.sum(-1).reshape(-1)
    biased = fit_method("auxdpo", log_probs, population, theta0, A=A, max_iter=500,
                        null_weights=mu / mu.sum()).theta
    scale = float((target - theta0).norm())
    assert float((biased - target).norm()) > 0.05 * scale        # the limits really differ
    for kind in ("reference", "prompt"):
        errors = [float((_fit(kind, log_probs, theta0, reward, rho, counts, n) - target).norm())
                  for n in (10**3, 10**4, 10**6)]
        assert errors[0] > errors[1] > errors[2]
        assert errors[2] < 0.02 * scale
    mult = _fit("multiplicity", log_probs, theta0, reward, rho, counts, 10**7)
    assert float((mult - biased).norm()) < 0.01 * scale
    assert float((mult - target).norm()) > 0.05 * scale


def test_row_keyed_auxdpo_fits_every_row_and_leaves_theta_to_the_optimiser():
    """2n − d free offsets: the row-keyed loss falls towards 0 (its infimum, no minimiser),
    far below what DPO or response keying can reach on the same sample."""
    log_probs, theta0, reward, rho, counts = _loglinear()
    sample = sample_pairs(counts, reward, 300, torch.Generator().manual_seed(0))
    problem = empirical_problem(sample, rho, 5, 3.0)
    A = forward_score_matrix(log_probs, theta0)
    omega, _ = response_weights(sample, log_probs(theta0), "multiplicity")
    rows = fit_auxdpo_rows(log_probs, problem, sample, theta0, A=A, omega=omega, max_iter=300)
    dpo = fit_method("dpo", log_probs, problem, theta0, A=A)
    assert rows.objective < 0.1 * dpo.objective
    idx = torch.stack([sample.state * 5 + sample.chosen, sample.state * 5 + sample.rejected],
                      1).reshape(-1)
    M = A[:, idx]
    assert_close(M @ rows.delta, torch.zeros(2, dtype=DT), ops=1e4,
                 scale=float(M.norm() * rows.delta.norm()))


def test_cli_pairs_sweep_prints_one_answer_per_n(tmp_path):
    cmd = [sys.executable, "-m", "auxdpo", "oracle", "--regime", "finite", "--finite-solver",
           "full-batch", "--pairs", "200", "400", "--methods", "dpo", "auxdpo",
           "--aux-offsets", "row", "response", "--seeds", "1", "--rm-steps", "0",
           "--prompts", "3", "--heldout", "1", "--vocab-size", "3", "--response-length", "2",
           "--hidden", "8", "--layers", "1", "--warmup-steps", "0", "--max-iter", "30",
           "--quiet", "--json", "--out", str(tmp_path / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    answers = json.loads(out.stdout)
    assert [a["pairs"] for a in answers] == [200, 400]
    for answer in answers:
        assert {"dpo", "iw-dpo", "auxdpo-row", "auxdpo", "rlhf_local"} <= set(
            answer["gap_closed"])
        assert set(answer["gap_closed"]["dpo"]) == {"mean", "std"}
    assert (tmp_path / "run" / "gap_vs_pairs.png").exists()
