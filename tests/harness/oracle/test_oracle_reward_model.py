"""Reward models: a same-family reward is recovered up to prompt constants."""

from __future__ import annotations

import pytest
import torch

from auxdpo.harness.oracle.reward_model import RewardModel, fit_reward_model, scored_inputs
from auxdpo.harness.oracle.tasks import all_responses
from oracle_fixtures import TINY, tiny_finite


@pytest.fixture(scope="module")
def tiny():
    return tiny_finite()


def test_reward_model_recovers_representable_reward_up_to_prompt_constants(tiny):
    """r* = a same-family reward model (the task's body, a random head); a fresh model fitted
    on every pair with soft BTL labels recovers it up to a per-prompt constant."""
    task, *_ = tiny
    S = task.num_prompts
    inputs = scored_inputs(task.prompts[:S], all_responses(TINY["vocab_size"],
                                                           TINY["response_length"]))
    teacher = RewardModel(task.model, head_seed=7)
    with torch.no_grad():
        teacher.head.weight.div_(teacher.table(inputs, S).std())     # unit-scale r*
        r_star = teacher.table(inputs, S)
    assert float(r_star.std()) == pytest.approx(1.0, rel=1e-9)
    A = r_star.shape[1]
    s, a, b = torch.nonzero(~torch.eye(A, dtype=torch.bool).expand(S, A, A), as_tuple=True)
    student = RewardModel(task.model)
    fit_reward_model(student, inputs, S, s, a, b,
                     pref_prob=torch.sigmoid(r_star[s, a] - r_star[s, b]),
                     steps=400, lr=1e-2, val_fraction=0.0)
    with torch.no_grad():
        r_hat = student.table(inputs, S)
    centred = lambda r: r - r.mean(dim=1, keepdim=True)  # noqa: E731
    error = (centred(r_hat) - centred(r_star)).abs().max()
    assert float(error) < 0.05, float(error)
    before = (centred(torch.zeros_like(r_star)) - centred(r_star)).abs().max()
    assert float(before) > 1.0                    # the fit did the work (head starts at 0)
