"""The global mode (auxdpo.offsets.global_mode): the penalty's gradient and u = A·δ against
brute force (A built column by column, float64), u's recomputation, and u's version."""

import pytest
import torch

from offsets_fixtures import (
    STORE_EXAMPLES as N_EXAMPLES,
)
from offsets_fixtures import (
    dpo_backward,
    dpo_grad,
    flat,
    random_rows,
    select,
)
from offsets_fixtures import make_offsets as make
from tolerance import assert_close

F64 = torch.float64



def test_global_penalty_gradient_and_u_match_brute_force(world):
    _, dataset, matrix, margins = world
    # λ and lr keep SGD stable: the penalty's curvature on a batch is ~(n/G)·2λ/(2n)²·‖A‖²
    lam, lr, n, size = 1.0, 0.05, N_EXAMPLES, 4
    offsets = make(world, mode="global", lambda_null=lam, delta_lr=lr, optimizer="sgd")
    offsets.prepare(dataset)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        rows = random_rows(gen, size)
        before = offsets.table()
        u_true = matrix @ flat(before)
        assert_close(offsets.u, u_true, ops=1e3)
        penalty_grad = (n / size) * 2 * lam / (2 * n) ** 2 * (matrix.T @ u_true)
        expected = dpo_grad(before, rows, margins, size) + penalty_grad.view(n, 2)
        dpo_backward(offsets, select(dataset, rows), margins, size)
        metrics = offsets.step(size)
        after = offsets.table()
        assert metrics["aux/penalty"] == pytest.approx(
            lam * float((u_true / (2 * n)).pow(2).sum()), rel=1e-10, abs=1e-14)
        assert_close((before - after)[rows] / lr, expected[rows], ops=1e4)
        others = [i for i in range(n) if i not in rows]
        assert torch.equal(after[others], before[others])
    assert torch.any(offsets.table() != 0)
    u_true = matrix @ flat(offsets.table())
    assert_close(offsets.u, u_true, ops=1e3)
    # ‖Aδ‖/(ā‖δ‖), ā² = ‖A‖_F²/2n: the probe's 16 pairs cover all 12 rows (ω = 1)
    scale = float(matrix.pow(2).sum(0).mean()) ** 0.5
    assert offsets.column_scale == pytest.approx(scale, rel=1e-12)
    assert metrics["aux/null_residual"] == pytest.approx(
        float(u_true.norm() / offsets.table().norm()) / scale, rel=1e-8)
    drifted = offsets.u.clone()
    offsets.recompute_u(dataset)
    assert_close(offsets.u, u_true, ops=1e3)
    assert_close(drifted, offsets.u, ops=1e3)


def _run(offsets, dataset, margins, seed, steps):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = random_rows(gen, 4)
        dpo_backward(offsets, select(dataset, rows), margins, 4)
        offsets.step(4)


def test_recompute_every_and_cap(world):
    _, dataset, matrix, margins = world
    offsets = make(world, mode="global", lambda_null=1.0, delta_lr=2.0, delta_cap=0.5,
                   recompute_every=3)
    offsets.prepare(dataset)
    _run(offsets, dataset, margins, seed=6, steps=6)
    delta = offsets.table()
    assert delta.abs().max() <= 0.5 and delta.abs().max() > 0.3      # bounded, and active
    assert_close(offsets.u, matrix @ flat(delta), ops=1e3)
    with pytest.raises(ValueError, match="re-iterable"):
        make(world, mode="global", recompute_every=3).prepare(iter(dataset))




def test_u_version_marks_every_change_of_u(world):
    """The fused pass's tangent goes stale exactly when u changes: prepare, each step and
    each recomputation bump the version; reading values does not. u = 0 gives no tangent."""
    _, dataset, _, margins = world
    offsets = make(world, mode="global", lambda_null=1.0, delta_lr=0.1)
    constraint = offsets.constraint
    assert constraint.tangent() is None                      # u = 0: no JVP needed
    version = constraint.version
    offsets.prepare(dataset)
    assert constraint.version == version + 1
    dpo_backward(offsets, select(dataset, [0, 1, 2, 3]), margins, 4)
    offsets.step(4)
    assert constraint.version == version + 2
    offsets.values()
    assert constraint.version == version + 2
    assert torch.equal(constraint.tangent(), offsets.u)
    offsets.recompute_u(dataset)
    assert constraint.version == version + 3
