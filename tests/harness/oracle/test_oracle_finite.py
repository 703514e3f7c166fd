"""The oracle's finite-sample regime: sampling, its expectation, the trainer's inputs, the runs.

Values checked: the population loss equals the exact expectation of the finite-sample loss
(enumeration of every two-pair data set); the sampler's frequencies match the enumerated
draw distribution; the trainer's pair log-probs equal the enumeration's; a Bradley–Terry
reward model recovers a representable r* up to per-prompt constants; a tiny run reports
gap closed for every method.
"""

from __future__ import annotations

import math

import pytest
import torch

from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.finite import (
    build_trainer,
    finite_loss,
    trainer_capacity,
    trainer_pair_logps,
)
from auxdpo.harness.oracle.runner import OracleConfig, run_oracle
from auxdpo.harness.oracle.sampling import FiniteConfig, PairSample, enumerate_draws, sample_pairs
from auxdpo.harness.oracle.solvers import pair_loss_closure
from auxdpo.harness.oracle.tasks import TokenTaskConfig
from oracle_fixtures import TINY, tiny_finite
from tolerance import assert_close, roundoff


@pytest.fixture(scope="module")
def tiny():
    """(task, capacity norm, log-prob fn over training prompts, θ₀, log π₀, skew counts)."""
    return tiny_finite()


@pytest.mark.parametrize("method", ["dpo", "ipo", "dpop", "auxdpo"])
def test_population_loss_is_expected_finite_loss(tiny, method):
    """E over every data set of n = 2 sampled, BTL-labelled pairs of the mean loss equals the
    population loss (Eq. 3 / Eq. 7) of the same design, at a θ away from θ₀."""
    task, capacity, fn, theta0, logp0, counts = tiny
    S, L, beta = task.num_prompts, task.config.response_length, 2.0
    gen = torch.Generator().manual_seed(1)
    theta = theta0 + 0.3 * torch.randn(theta0.shape, generator=gen, dtype=theta0.dtype)
    delta = torch.randn(S * logp0.shape[1], generator=gen, dtype=theta0.dtype) \
        if method == "auxdpo" else None
    reward = task.reward[:S]
    with torch.no_grad():
        logp = fn(theta)
        prob, draws = enumerate_draws(counts, reward)
        kw = dict(beta=beta, delta=delta, dpop_lambda=5.0, ipo_length=L)
        single = torch.stack([
            finite_loss(method, logp, logp0, PairSample(draws.state[k:k + 1],
                        draws.chosen[k:k + 1], draws.rejected[k:k + 1]), **kw)
            for k in range(prob.numel())])
        # a data set of two draws (j, k) has mean loss (ℓ_j + ℓ_k)/2; spot-check that
        for j, k in ((0, 1), (5, 17), (prob.numel() - 1, 2)):
            pair = PairSample(draws.state[[j, k]], draws.chosen[[j, k]], draws.rejected[[j, k]])
            assert float(finite_loss(method, logp, logp0, pair, **kw)) == pytest.approx(
                float(single[j] + single[k]) / 2, rel=1e-13)
        expected = (prob[:, None] * prob[None, :] * (single[:, None] + single[None, :]) / 2).sum()
        problem = PreferenceProblem(task.rho(), reward, counts, beta)
        population = pair_loss_closure(method, fn, problem, theta0, dpop_lambda=5.0,
                                       ipo_length=L)(theta, delta)
    assert float(prob.sum()) == pytest.approx(1.0, abs=roundoff(ops=10 * prob.numel(), scale=1))
    assert float(expected) == pytest.approx(float(population), rel=1e-12)


def test_trainer_pair_logps_equal_the_enumeration(tiny, tmp_path):
    """The trainer's own sequence log-probs (pre-tokenised rows: no BOS/EOS/padding) equal
    the enumeration's log π(a|s), at θ₀ and at a θ written into the trainer's model."""
    task, capacity, fn, theta0, logp0, counts = tiny
    sample = sample_pairs(counts, task.reward[:task.num_prompts], 12,
                          torch.Generator().manual_seed(2))
    trainer = build_trainer(task, capacity, sample, method="auxdpo", beta=1.0,
                            finite=FiniteConfig(pairs=12, batch_size=5),
                            output_dir=str(tmp_path), seed=0)
    chosen, rejected = trainer_pair_logps(trainer)
    assert_close(chosen, logp0[sample.state, sample.chosen], ops=100)
    assert_close(rejected, logp0[sample.state, sample.rejected], ops=100)
    theta = theta0 + 0.5 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(4),
                                       dtype=theta0.dtype)
    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, value in capacity.parameters(theta).items():
            if name in capacity.names:
                params[name].copy_(value)
        logp = fn(theta)
    chosen, rejected = trainer_pair_logps(trainer)
    assert_close(chosen, logp[sample.state, sample.chosen], ops=100)
    assert_close(rejected, logp[sample.state, sample.rejected], ops=100)


def test_trainer_capacity_trains_the_oracle_names(tiny):
    import copy

    from auxdpo.train.capacity import apply_capacity

    task, capacity, *_ = tiny
    spec = trainer_capacity(capacity)
    assert apply_capacity(copy.deepcopy(task.model), spec).trainable == capacity.names
    with pytest.raises(ValueError, match="lora"):
        trainer_capacity(FlatCapacity(task.model, "lora:1"))


def test_tiny_finite_run_reports_every_method():
    config = OracleConfig(regime="finite", seeds=1, capacities=["norm"], betas=[10.0],
                          aux_modes=["projection", "global", "batch"], max_iter=40,
                          task=TokenTaskConfig(**TINY),
                          finite=FiniteConfig(pairs=24, epochs=2, batch_size=8, rm_steps=10))
    result = run_oracle(config)
    methods = {"rlhf_local", "dpo", "ipo", "dpop", "auxdpo", "auxdpo-global",
               "auxdpo-batch", "rlhf_2stage"}
    assert set(result["gap_closed"]) == methods
    assert all(math.isfinite(v["mean"]) for v in result["gap_closed"].values())
    by_method = {r["method"]: r for r in result["rows"]}
    assert by_method["base"]["gap_closed"] == 0.0
    assert by_method["rlhf"]["gap_closed"] == pytest.approx(1.0, abs=1e-12)
    assert by_method["dpo"]["steps"] == 6                 # ⌈24 / 8⌉ · 2 epochs
    assert 0.0 <= by_method["rlhf_2stage"]["rm_agreement"] <= 1.0


