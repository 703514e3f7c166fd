"""The projection mode (auxdpo.offsets.projection): δ = Γc stays in N(A) (A built column by
column), Γ is orthonormal with the rank of A, exact resume, and the refusals."""

import copy

import pytest
import torch

from auxdpo.offsets import AuxOffsets
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import (
    brute_force_dataset_matrix,
    dataset_batches,
    dpo_backward,
    flat,
    select,
)
from tolerance import assert_close, roundoff

F64 = torch.float64


def test_projection_keeps_delta_in_null_space(world):
    model, dataset, _, margins = world
    names = ["transformer.ln_f.weight", "transformer.ln_f.bias"]        # d = 32
    products = ReferenceProducts(model, names)
    n = 40                                                              # 2n = 80 > d = 32
    data = dataset_batches(n, 8, seed=100)
    matrix = brute_force_dataset_matrix(model, data, names, n)
    offsets = AuxOffsets(n, products, mode="projection", delta_lr=0.1, dtype=F64)
    offsets.prepare(data)
    rank = int(torch.linalg.matrix_rank(matrix))
    assert offsets.rank == rank and offsets.basis.shape == (2 * n, 2 * n - rank)
    assert_close(offsets.basis.T @ offsets.basis, torch.eye(2 * n - rank, dtype=F64), ops=1e3)
    assert_close(offsets.jacobian_t, matrix.T, ops=100)
    row_margins = torch.linspace(-2, 2, n, dtype=F64)
    gen = torch.Generator().manual_seed(7)
    for _ in range(10):
        rows = torch.randperm(n, generator=gen)[:8].tolist()
        dpo_backward(offsets, select(data, rows), row_margins, 8)
        metrics = offsets.step(8)
    delta = flat(offsets.table())
    assert delta.norm() > 0.1
    # ‖Aδ‖/‖δ‖ of a projected δ: round-off relative to ‖A‖, not to the residual's size.
    bound = roundoff(ops=1e3, scale=float(matrix.norm()))
    assert float((matrix @ delta).norm() / delta.norm()) < bound
    assert metrics["aux/null_residual"] < bound
    assert metrics["aux/null_dim"] == 2 * n - rank


def test_projection_state_dict_round_trip(world):
    model, _, _, _ = world
    names = ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    n = 20
    data = dataset_batches(n, 4, seed=200)
    margins = torch.linspace(-1, 1, n, dtype=F64)

    def fresh():
        offsets = AuxOffsets(n, ReferenceProducts(model, names), mode="projection",
                             delta_lr=0.1, dtype=F64)
        offsets.prepare(data)
        return offsets

    def run(offsets, seed):
        gen = torch.Generator().manual_seed(seed)
        for _ in range(3):
            rows = torch.randperm(n, generator=gen)[:4].tolist()
            dpo_backward(offsets, select(data, rows), margins, 4)
            offsets.step(4)

    uninterrupted = fresh()
    run(uninterrupted, seed=8)
    state = copy.deepcopy(uninterrupted.state_dict())
    run(uninterrupted, seed=9)
    resumed = fresh()
    resumed.load_state_dict(state)
    run(resumed, seed=9)
    assert torch.equal(resumed.table(), uninterrupted.table())
    assert resumed.table().norm() > 0


def test_projection_refusal_and_trivial_null_space(world):
    model, dataset, _, _ = world
    products = ReferenceProducts(model)
    with pytest.raises(ValueError, match="mode='global'") as info:
        AuxOffsets(10**6, products, mode="projection", memory_budget_bytes=2**30)
    assert "GiB" in str(info.value) and str(products.dim) in str(info.value)
    tiny = AuxOffsets(2, products, mode="projection", dtype=F64)
    with pytest.warns(RuntimeWarning, match="reduces to DPO"):
        tiny.prepare([select(dataset, [0, 1])])
    chosen, rejected = tiny.deltas(torch.tensor([0, 1]))
    assert torch.equal(chosen, torch.zeros(2, dtype=F64)) and tiny.basis.shape[1] == 0


