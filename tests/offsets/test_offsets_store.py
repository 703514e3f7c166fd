"""AuxOffsets (auxdpo.offsets.store): the lifecycle over its composed parts — gradient
accumulation, exact resume from its state, the public names that read the parts, the
refusals — against brute force where values are compared (float64, tiny GPT-2)."""

import copy
import io

import pytest
import torch

from auxdpo.offsets import MODES, AuxOffsets
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import STORE_EXAMPLES as N_EXAMPLES
from offsets_fixtures import (
    dataset_batches,
    dpo_backward,
    random_rows,
    select,
    tiny_gpt2,
)
from offsets_fixtures import make_offsets as make
from tolerance import assert_close

F64 = torch.float64



@pytest.mark.parametrize("mode", ["global", "batch"])
def test_accumulation_equals_one_big_batch(world, mode):
    _, dataset, _, margins = world
    kwargs = dict(mode=mode, lambda_null=1.0, delta_lr=0.1)
    if mode == "batch":
        kwargs["lambda_amp"] = 0.1
    big, small = make(world, **kwargs), make(world, **kwargs)
    for offsets in (big, small):
        offsets.prepare(dataset)
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        rows = random_rows(gen, 8)
        dpo_backward(big, select(dataset, rows), margins, 8)
        big.step(8)
        for half in (rows[:4], rows[4:]):
            dpo_backward(small, select(dataset, half), margins, 8)
        small.step(8)
        assert_close(small.table(), big.table(), ops=1e3)
        if mode == "global":
            assert_close(small.u, big.u, ops=1e3)


def _run(offsets, dataset, margins, seed, steps):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = random_rows(gen, 4)
        dpo_backward(offsets, select(dataset, rows), margins, 4)
        offsets.step(4)


@pytest.mark.parametrize("mode", ["global", "batch"])
def test_state_dict_round_trip(world, mode):
    _, dataset, _, margins = world
    kwargs = dict(mode=mode, lambda_null=1.0, delta_lr=0.1, delta_cap=3.0)
    uninterrupted = make(world, **kwargs)
    uninterrupted.prepare(iter(dataset))
    _run(uninterrupted, dataset, margins, seed=4, steps=4)
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)
    _run(uninterrupted, dataset, margins, seed=5, steps=4)

    buffer.seek(0)
    resumed = make(world, **kwargs)
    resumed.load_state_dict(torch.load(buffer))
    _run(resumed, dataset, margins, seed=5, steps=4)
    assert torch.equal(resumed.table(), uninterrupted.table())
    assert resumed.num_steps == uninterrupted.num_steps == 8
    if mode == "global":
        assert torch.equal(resumed.u, uninterrupted.u)
        # With the dataset known, resuming recomputes u from scratch: equal up to round-off.
        buffer.seek(0)
        recomputed = make(world, **kwargs)
        recomputed.prepare(dataset)
        recomputed.load_state_dict(torch.load(buffer))
        _run(recomputed, dataset, margins, seed=5, steps=4)
        assert_close(recomputed.u, uninterrupted.u, ops=1e3)


def test_bad_input(world):
    _, dataset, _, margins = world
    with pytest.raises(ValueError, match="mode"):
        make(world, mode="nope")
    with pytest.raises(ValueError, match="lambda_amp"):
        make(world, mode="global", lambda_amp=0.1)
    with pytest.raises(ValueError, match="delta_cap"):
        make(world, mode="projection", delta_cap=1.0)
    with pytest.raises(ValueError, match="amp_sign"):
        make(world, mode="batch", amp_sign=2)
    with pytest.warns(RuntimeWarning, match="delta_cap"):
        make(world, mode="batch", amp_sign=-1, lambda_amp=0.1)
    offsets = make(world, mode="global")
    with pytest.raises(ValueError, match="out of range"):
        offsets.deltas(torch.tensor([0, N_EXAMPLES]))
    with pytest.raises(ValueError, match="accumulate"):
        offsets.step(4)
    bad = copy.copy(select(dataset, [0, 1]))
    bad["aux_index"] = torch.tensor([0])
    with pytest.raises(ValueError, match="2B rows"):
        offsets.accumulate(bad)
    offsets.prepare(dataset)
    dpo_backward(offsets, select(dataset, [0, 1, 2, 3]), margins, 4)
    offsets.step(4)
    with pytest.raises(ValueError, match="missing"):
        offsets.recompute_u(dataset[1:])


def test_low_precision_model_keeps_offsets_in_float32():
    """A bf16 model: δ and u are stored in float32 and track a float32 run closely."""
    data = dataset_batches(8, 4, seed=300)
    margins = torch.ones(8)
    runs = []
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_gpt2("sdpa", layers=1).to(dtype)
        offsets = AuxOffsets(8, ReferenceProducts(model), mode="global", lambda_null=1.0,
                             delta_lr=0.1, dtype=dtype)
        offsets.prepare(data)
        for step in range(4):
            dpo_backward(offsets, data[step % 2], margins, 4)
            offsets.step(4)
        assert offsets.table().dtype == offsets.u.dtype == torch.float32
        runs.append(offsets)
    torch.testing.assert_close(runs[1].table(), runs[0].table(), rtol=0.02, atol=1e-3)
    torch.testing.assert_close(runs[1].u, runs[0].u, rtol=0.05, atol=0.05)


@pytest.mark.filterwarnings("ignore:projection:RuntimeWarning")   # N(A) = {0} here
@pytest.mark.parametrize("mode", MODES)
def test_public_names_read_the_composed_parts(world, mode):
    """Each mode exposes its own state under the public names (and only its own): raw and u
    (global), raw (batch), Γ, c, Aᵀ and rank (projection); deltas() are values()[slots]."""
    _, dataset, matrix, margins = world
    offsets = make(world, mode=mode, lambda_null=1.0 if mode != "projection" else 0.0,
                   delta_lr=0.1)
    offsets.prepare(dataset)
    dpo_backward(offsets, select(dataset, [0, 1, 2, 3]), margins, 4)
    offsets.step(4)
    index = torch.tensor([3, 0, 7])
    chosen, rejected = offsets.deltas(index)
    table = offsets.table()
    assert torch.equal(torch.stack([chosen, rejected], 1).detach(), table[index])
    assert offsets.num_slots == 2 * N_EXAMPLES and offsets.weights.tolist() == [1.0] * 24
    if mode == "projection":
        assert offsets.u is None and not hasattr(offsets, "raw")
        assert torch.equal(offsets.values(), offsets.basis @ offsets.coef[0].detach())
        assert offsets.rank == int(torch.linalg.matrix_rank(matrix))
        assert_close(offsets.jacobian_t, matrix.T, ops=100)
    else:
        assert torch.equal(offsets.values(), offsets.raw.detach())
        assert not hasattr(offsets, "basis")
        assert (offsets.u is None) == (mode == "batch")
    state = offsets.state_dict()
    assert state["mode"] == mode and state["num_steps"] == 1
    assert ("u" in state) == (mode == "global") and ("basis" in state) == (mode == "projection")
