"""Pair sampling: draws against the enumeration, rating labels, groups, FiniteConfig checks."""

from __future__ import annotations

import pytest
import torch

from auxdpo.harness.oracle.designs import disagreeing_pairs
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.sampling import (
    FiniteConfig,
    enumerate_draws,
    rating_labels,
    sample_groups,
    sample_pairs,
)
from oracle_fixtures import tiny_finite
from tolerance import assert_close

DT = torch.float64


@pytest.fixture(scope="module")
def tiny():
    return tiny_finite()


def test_sampler_matches_the_enumerated_draw_distribution(tiny):
    task, _, _, _, _, counts = tiny
    reward = task.reward[:task.num_prompts]
    n = 200_000
    sample = sample_pairs(counts, reward, n, torch.Generator().manual_seed(5))
    prob, draws = enumerate_draws(counts, reward)
    A = counts.shape[1]
    code = lambda s, w, l: (s * A + w) * A + l  # noqa: E731
    freq = torch.bincount(code(sample.state, sample.chosen, sample.rejected),
                          minlength=counts.numel()).double() / n
    target = torch.zeros(counts.numel(), dtype=torch.float64)
    target[code(draws.state, draws.chosen, draws.rejected)] = prob
    tolerance = 5 * (target * (1 - target) / n).sqrt() + 1e-9
    assert bool(((freq - target).abs() <= tolerance).all())
    assert bool((sample.chosen != sample.rejected).all())


def test_finite_config_validation():
    with pytest.raises(ValueError, match="sampler"):
        FiniteConfig(sampler="uniform")
    with pytest.raises(ValueError, match="lr"):
        FiniteConfig(lr=0.0)
    with pytest.raises(ValueError, match="lambda_amp"):
        FiniteConfig(lambda_amp=-1.0)
    with pytest.raises(ValueError, match="aux_modes"):
        OracleConfig(regime="population", aux_modes=["batch"])
    assert OracleConfig(regime="finite", aux_modes=["batch"]).finite.pairs == 1000
    restored = OracleConfig(regime="finite", finite={"pairs": 7})
    assert restored.finite == FiniteConfig(pairs=7)


def test_rating_labels_choose_the_higher_rating_with_its_sigmoid():
    state = torch.tensor([0, 0, 1])
    first, second = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    rf, rs = torch.tensor([1.0, 0.0, 2.0], dtype=DT), torch.tensor([0.5, 1.0, 2.5], dtype=DT)
    out = rating_labels(state, first, second, rf, rs, (0.0, 0.5), torch.Generator())
    assert out.chosen.tolist() == [0, 2, 0] and out.rejected.tolist() == [1, 1, 2]
    assert_close(out.pref, torch.sigmoid(torch.tensor([1.0, 2.0, 1.0], dtype=DT)), ops=10)
    # with noise: labels follow the noisy rating, p ≥ 1/2, and on average agree with r*
    counts = torch.ones(1, 2, 2, dtype=DT) * (1 - torch.eye(2, dtype=DT))
    reward = torch.tensor([[0.0, 1.0]], dtype=DT)
    noisy = sample_pairs(counts, reward, 4000, torch.Generator().manual_seed(0), soft=(0.5, 1))
    assert bool((noisy.pref >= 0.5).all())
    agree = (noisy.chosen == 1).double().mean()          # P(1 + N(0, 0.5) − N(0, 0.5) > 0)
    assert float(agree) == pytest.approx(0.921, abs=0.02)


def test_disagreeing_groups_weigh_each_marked_pair_by_the_factor():
    rho = torch.tensor([1.0], dtype=DT)
    behaviour = torch.full((1, 4), 0.25, dtype=DT)
    reward = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=DT)
    scores = torch.tensor([[0.0, 1.0, 3.0, 2.0]], dtype=DT)        # only {2, 3} disagrees
    marked = disagreeing_pairs(reward, scores)
    gen = torch.Generator().manual_seed(0)
    sample = sample_groups(rho, behaviour, reward, 3000, 2, gen, disagree=marked, factor=10.0)
    pairs = torch.stack([sample.chosen, sample.rejected]).sort(0).values
    assert bool(((pairs[0] == 2) & (pairs[1] == 3)).all())        # k = 2: M = 1, m must be 1
    # k = 3: a group {2, 3, x} (m = 1 of M = 3) is kept with probability 10^-2, so groups
    # holding the marked pair are rare but present; none without it
    sample = sample_groups(rho, behaviour, reward, 3000, 3, gen, disagree=marked, factor=10.0)
    share = marked[sample.state, sample.chosen, sample.rejected].double().mean()
    assert 0.3 < float(share) <= 1.0
    with pytest.raises(ValueError, match="disagreeing"):
        sample_groups(rho, behaviour, reward, 10, 2, gen,
                      disagree=torch.zeros_like(marked), factor=10.0)


@pytest.mark.parametrize("bad, match", [
    ({"delta_scales": [0.0]}, "delta_scales"), ({"delta_scales": [1.0, 1.0]}, "delta_scales"),
    ({"labels": "fuzzy"}, "labels"), ({"sampler": "disagreeing"}, "responses_per_prompt"),
    ({"group_factor": 0.5}, "group_factor")])
def test_finite_config_refuses_bad_prior_and_label_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        FiniteConfig(**bad)


def test_finite_config_takes_em_only_where_it_is_estimated():
    FiniteConfig(solver="full-batch", delta_scales=["em", 1.0])
    with pytest.raises(ValueError, match="em"):
        FiniteConfig(solver="trainer", delta_scales=["em"])
    with pytest.raises(ValueError, match="delta_half_counts"):
        FiniteConfig(delta_half_counts=[0.0])


def test_sample_groups_labels_every_distinct_pair_of_each_prompt():
    rho = torch.tensor([0.5, 0.5], dtype=DT)
    behaviour = torch.full((2, 6), 1 / 6, dtype=DT)
    reward = torch.arange(6, dtype=DT).repeat(2, 1) * 100.0      # the larger index always wins
    sample = sample_groups(rho, behaviour, reward, 1000, 4, torch.Generator().manual_seed(0))
    assert len(sample) == 1000
    assert torch.all(sample.chosen > sample.rejected)
    # groups of ≤ 6 pairs: consecutive rows share the prompt within a group
    same_prompt = (sample.state[1:] == sample.state[:-1]).double().mean()
    assert same_prompt > 0.7
    with pytest.raises(ValueError, match=">= 2"):
        sample_groups(rho, behaviour, reward, 10, 1, torch.Generator())
