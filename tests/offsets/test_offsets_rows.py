"""δ as a parameter over slots (auxdpo.offsets.rows): lazy row-wise Adam against an
independent per-row Adam, the cap's chain rule, and the optimizers' state."""

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


def _reference_adam(states, delta, rows, grad, lr, betas=(0.9, 0.999), eps=1e-8):
    """Independent per-row Adam with per-row bias correction."""
    for i in rows:
        m, v, t = states.get(i, (torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), 0))
        t += 1
        m = betas[0] * m + (1 - betas[0]) * grad[i]
        v = betas[1] * v + (1 - betas[1]) * grad[i] ** 2
        states[i] = (m, v, t)
        delta[i] -= lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)


def test_lazy_adam_moves_only_batch_rows(world):
    _, dataset, matrix, margins = world
    lam, lr, n, size = 1.0, 0.1, N_EXAMPLES, 4
    offsets = make(world, mode="global", lambda_null=lam, delta_lr=lr)
    offsets.prepare(dataset)
    reference, states = torch.zeros(n, 2, dtype=F64), {}
    gen = torch.Generator().manual_seed(1)
    for _ in range(12):
        rows = random_rows(gen, size)
        before = offsets.table()
        u_true = matrix @ flat(reference)
        grad = dpo_grad(reference, rows, margins, size) + (
            (n / size) * 2 * lam / (2 * n) ** 2 * (matrix.T @ u_true)).view(n, 2)
        _reference_adam(states, reference, rows, grad, lr)
        dpo_backward(offsets, select(dataset, rows), margins, size)
        offsets.step(size)
        after = offsets.table()
        others = [i for i in range(n) if i not in rows]
        assert torch.equal(after[others], before[others])     # momentum does not leak
        assert_close(after, reference, ops=1e4)
    assert_close(offsets.u, matrix @ flat(reference), ops=1e4)




def test_row_adam_is_torch_adam_on_the_rows_it_steps():
    """Rows stepped every time follow torch.optim.Adam exactly; the other row never moves
    and keeps a zero step count."""
    from auxdpo.offsets.rows import RowAdam

    gen = torch.Generator().manual_seed(0)
    param = torch.randn(3, 2, generator=gen, dtype=F64)
    reference = param[:2].clone().requires_grad_(True)
    adam = torch.optim.Adam([reference], lr=0.1, betas=(0.8, 0.9), eps=1e-8)
    lazy = RowAdam((3, 2), lr=0.1, betas=(0.8, 0.9), eps=1e-8, dtype=F64, device="cpu")
    untouched = param[2].clone()
    for _ in range(5):
        grad = torch.randn(2, 2, generator=gen, dtype=F64)
        reference.grad = grad.clone()
        adam.step()
        lazy.update(param, torch.tensor([0, 1]), grad)
    assert_close(param[:2], reference.detach(), ops=100)
    assert torch.equal(param[2], untouched)
    assert lazy.state_dict()["steps"].tolist() == [5, 5, 0]


def test_row_offsets_cap_and_chain_rule():
    """δ = cap·tanh(raw); with SGD a step moves raw by lr·(∂L/∂δ)·cap·(1 − tanh²(raw)) on the
    step's slots only, and the returned change is δ's."""
    from auxdpo.offsets.constraints import StepInputs
    from auxdpo.offsets.prior import OffsetPrior
    from auxdpo.offsets.rows import RowOffsets, row_optimizer

    make_sgd = row_optimizer("sgd", lr=0.5, betas=(0.9, 0.999), eps=1e-8, dtype=F64,
                             device="cpu")
    rows = RowOffsets(4, 2.0, make_sgd, F64, "cpu")
    with torch.no_grad():
        rows.raw.copy_(torch.tensor([0.1, -0.3, 0.7, 0.0], dtype=F64))
    before_raw, before = rows.raw.detach().clone(), rows.values()
    assert torch.equal(before, 2.0 * torch.tanh(before_raw))
    slots = torch.tensor([1, 2])
    penalty_grad = torch.tensor([0.0, 0.4, -0.2, 0.0], dtype=F64)

    def penalty(delta, grad):
        grad += penalty_grad
        return {"aux/penalty": 1.0}

    prior = OffsetPrior(None, None, torch.ones(4, dtype=F64), torch.arange(4).view(2, 2))
    inputs = StepInputs(products=[], occurrences=[slots], global_batch_size=1,
                        local_weight=1.0, prior=prior)
    metrics, change = rows.step(inputs, penalty)
    expected = before_raw - 0.5 * penalty_grad * 2.0 * (1 - torch.tanh(before_raw) ** 2)
    assert metrics == {"aux/penalty": 1.0}
    assert_close(rows.raw.detach()[slots], expected[slots], ops=10)
    assert torch.equal(rows.raw.detach()[[0, 3]], before_raw[[0, 3]])
    assert_close(change, rows.values() - before, ops=10)
    assert rows.optimizer.state_dict()["steps"].tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="optimizer"):
        row_optimizer("lbfgs", lr=0.1, betas=(0.9, 0.999), eps=1e-8, dtype=F64, device="cpu")
