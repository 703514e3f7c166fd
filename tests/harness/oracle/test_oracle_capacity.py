"""FlatCapacity: the trainable slice starts at the base model; the frozen-prefix tail path."""


import pytest
import torch

from auxdpo.harness.oracle.capacity import FlatCapacity
from oracle_fixtures import token_task
from tolerance import assert_close

DT = torch.float64


@pytest.fixture(scope="module")
def task():
    return token_task()


@pytest.mark.parametrize("spec", ["norm", "lora:2", "last-block"])
def test_capacity_starts_at_the_base_model(task, spec):
    capacity = FlatCapacity(task.model, spec)
    ids = task.inputs[:5]
    with torch.no_grad():
        assert torch.allclose(capacity.logits(capacity.theta0, ids), task.model(ids).logits)
    assert capacity.dim == {"norm": 16, "lora:2": 2 * 24}.get(spec, capacity.dim)


@pytest.mark.parametrize("spec,where", [("norm", "the final norm"), ("lora:2", "block 0 of 1"),
                                        ("last-block", "block 0 of 1")])
def test_frozen_prefix_runs_once_and_changes_nothing(task, spec, where):
    """The tail path (prefix recorded once per input) gives the whole model's log-probs and
    score matrix A_θ₀ to round-off, away from θ₀ too; ``full`` has no frozen prefix."""
    from auxdpo.harness.oracle.solvers import forward_score_matrix

    tail, whole = FlatCapacity(task.model, spec), FlatCapacity(task.model, spec, tail=False)
    fn_tail, fn_whole = task.log_probs_fn(tail), task.log_probs_fn(whole)
    theta = tail.theta0 + 0.3 * torch.randn(tail.dim, dtype=DT,
                                            generator=torch.Generator().manual_seed(3))
    for point in (tail.theta0, theta):
        assert_close(fn_tail(point), fn_whole(point), ops=100)
        assert_close(forward_score_matrix(fn_tail, point),
                     forward_score_matrix(fn_whole, point), ops=100)
    assert tail.tail_reason.endswith(where) and whole.plan is None
    assert len(tail._captures) == 1                      # one prefix pass for every θ above
    full = FlatCapacity(task.model, "full")
    assert full.plan is None and "outside the blocks" in full.tail_reason


def test_tail_that_disagrees_at_theta0_falls_back_to_the_whole_model(task, monkeypatch):
    capacity = FlatCapacity(task.model, "lora:2")
    plan_logits = capacity.plan.logits
    monkeypatch.setattr(capacity.plan, "logits", lambda *a, **k: plan_logits(*a, **k) + 1e-6)
    ids = task.inputs[:5]
    with torch.no_grad():
        assert_close(capacity.logits(capacity.theta0, ids), task.model(ids).logits, ops=100)
    assert capacity.plan is None and "differ" in capacity.tail_reason
