"""Enumeration, designs, metrics, the population loss as an expectation, and the CLI."""

import itertools

import pytest
import torch

from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.designs import design_counts
from auxdpo.harness.oracle.solvers import pair_loss_closure
from auxdpo.harness.oracle.tasks import all_responses
from auxdpo.losses import get_loss
from oracle_fixtures import token_task
from tolerance import assert_close

DT = torch.float64


@pytest.fixture(scope="module")
def task():
    return token_task()


def test_enumeration_covers_every_response_exactly_once():
    responses = all_responses(3, 4)
    assert responses.shape == (81, 4)
    as_tuples = [tuple(r) for r in responses.tolist()]
    assert sorted(as_tuples) == list(itertools.product(range(3), repeat=4))  # each once


def test_log_probs_equal_brute_force_and_normalise(task):
    """Prefix-shared log π(a|s) = Σ_t log p(a_t | s, a_<t) from the full sequence, per a."""
    capacity = FlatCapacity(task.model, "norm")
    logp = task.log_probs_fn(capacity)(capacity.theta0)                  # (4, 27)
    assert_close(torch.logsumexp(logp, dim=1), torch.zeros(4, dtype=DT), ops=100,
                 scale=float(logp.abs().max()))              # 0 ± round-off of log-probs
    responses = all_responses(3, 3)
    with torch.no_grad():
        for s in range(4):
            ids = torch.cat([task.prompts[s].expand(27, 2), responses], dim=1)
            full = torch.log_softmax(task.model(ids).logits, dim=-1)[:, 1:-1]
            brute = full.gather(-1, responses[:, :, None]).squeeze(-1).sum(-1)
            assert_close(logp[s], brute, ops=100)
    assert torch.allclose(task.log_probs_fn(capacity, train_only=True)(capacity.theta0),
                          logp[:3])


@pytest.mark.parametrize("method", ["dpo", "ipo", "dpop", "auxdpo"])
def test_population_loss_is_the_expected_finite_sample_loss(task, method):
    """Σ n·[p ℓ(a≻a') + (1−p) ℓ(a'≻a)] = E over pairs ∝ n and labels ~ BTL(r*) of the hard
    loss, times N: computed exactly by enumerating every pair and both labels."""
    capacity = FlatCapacity(task.model, "norm")
    fn = task.log_probs_fn(capacity, train_only=True)
    theta0 = capacity.theta0
    theta = theta0 + 0.05 * torch.randn(theta0.shape, generator=torch.Generator()
                                        .manual_seed(3), dtype=DT)
    counts = design_counts("uniform", rho=task.rho(), probs0=fn(theta0).exp())
    problem = PreferenceProblem(task.rho(), task.reward[:3], counts, 2.0)
    delta = 0.1 * torch.randn(3 * 27, generator=torch.Generator().manual_seed(4), dtype=DT)
    use_delta = delta if method == "auxdpo" else None
    population = pair_loss_closure(method, fn, problem, theta0, ipo_length=3)(theta, use_delta)
    logp, ref = fn(theta), fn(theta0)
    scale = 1 / 3 if method == "ipo" else 1.0
    loss_fn, expected = get_loss(method), 0.0
    for s, a, b in itertools.product(range(3), range(27), range(27)):
        n = float(counts[s, a, b])
        if a == b or n == 0:
            continue
        p_ab = float(torch.sigmoid(task.reward[s, a] - task.reward[s, b]))
        for (w, l), prob in (((a, b), p_ab), ((b, a), 1 - p_ab)):   # the two possible labels
            kw = ({"delta_chosen": delta[s * 27 + w].view(1),
                   "delta_rejected": delta[s * 27 + l].view(1)} if use_delta is not None
                  else {})
            hard = loss_fn(scale * logp[s, w].view(1), scale * logp[s, l].view(1),
                           scale * ref[s, w].view(1), scale * ref[s, l].view(1), beta=2.0, **kw)
            expected += n * prob * float(hard.losses[0])
    assert float(population) == pytest.approx(expected, rel=1e-10)


