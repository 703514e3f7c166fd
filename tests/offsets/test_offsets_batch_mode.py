"""The batch mode (auxdpo.offsets.batch_mode): the batchwise penalty and its gradient against
brute force (A_B from A's columns, float64), and its agreement with the global mode at G = n."""

import warnings

import pytest
import torch

from offsets_fixtures import (
    STORE_EXAMPLES as N_EXAMPLES,
)
from offsets_fixtures import (
    dpo_backward,
    dpo_grad,
    random_rows,
    select,
)
from offsets_fixtures import make_offsets as make
from tolerance import assert_close

F64 = torch.float64


@pytest.mark.parametrize("amp_sign", [+1, -1])
def test_batch_mode_matches_brute_force(world, amp_sign):
    _, dataset, matrix, margins = world
    lam_null, lam_amp, lr, size = 0.5, 0.3, 0.05, 4
    with warnings.catch_warnings():          # amp_sign=-1 without a cap: warned, intended
        warnings.simplefilter("ignore", RuntimeWarning)
        offsets = make(world, mode="batch", lambda_null=lam_null, lambda_amp=lam_amp,
                       amp_sign=amp_sign, delta_lr=lr, optimizer="sgd")
    offsets.prepare(dataset)
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        rows = random_rows(gen, size)
        before = offsets.table()
        columns = torch.cat([matrix[:, [2 * i for i in rows]], matrix[:, [2 * i + 1 for i in rows]]],
                            dim=1)                                           # A_B, (d, 2B)
        values = torch.cat([before[rows, 0], before[rows, 1]])               # δ_B
        image = columns @ values
        responses = 2 * size
        penalty = (lam_null * image.pow(2).sum() / responses**2
                   + amp_sign * lam_amp * values.pow(2).sum() / responses)
        grad_b = (2 * lam_null / responses**2 * (columns.T @ image)
                  + 2 * amp_sign * lam_amp / responses * values)
        expected = dpo_grad(before, rows, margins, size)
        expected[rows, 0] += grad_b[:size]
        expected[rows, 1] += grad_b[size:]
        dpo_backward(offsets, select(dataset, rows), margins, size)
        metrics = offsets.step(size)
        assert metrics["aux/penalty"] == pytest.approx(float(penalty), rel=1e-10, abs=1e-14)
        after = offsets.table()
        assert_close((before - after)[rows] / lr, expected[rows], ops=1e3)
    assert offsets.u is None


def test_batch_mode_on_the_whole_dataset_is_global_mode(world):
    """With G = n the batch penalty λ‖A_Bδ_B/(2G)‖² is the global λ‖Aδ/(2n)‖²."""
    _, dataset, _, margins = world
    runs = [make(world, mode=mode, lambda_null=1.0, delta_lr=0.05, optimizer="sgd")
            for mode in ("global", "batch")]
    for offsets in runs:
        offsets.prepare(dataset)
        for _ in range(3):
            for batch in dataset:
                dpo_backward(offsets, batch, margins, N_EXAMPLES)
            metrics = offsets.step(N_EXAMPLES)
        offsets.final_penalty = metrics["aux/penalty"]
    assert_close(runs[0].table(), runs[1].table(), ops=100)
    assert runs[0].final_penalty == pytest.approx(runs[1].final_penalty, rel=1e-10)
    assert runs[0].final_penalty > 0


