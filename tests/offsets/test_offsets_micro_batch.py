"""The fused path (``AuxOffsets.reference_logps``): the loss's reference log-probs, A_Bᵀu and
the step's VJP from one (truncated) products pass give the same δ and u as separate passes,
and both match the brute-force A; float64, a 2-block GPT-2 with its last block trainable."""

import pytest
import torch
import torch.nn.functional as F

from auxdpo.offsets import AuxOffsets
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import (
    brute_force_dataset_matrix,
    dataset_batches,
    select,
    tiny_gpt2,
)
from tolerance import assert_close

N_EXAMPLES = 12
F64 = torch.float64


@pytest.fixture(scope="module")
def world():
    model = tiny_gpt2("sdpa", layers=2)
    names = [n for n, _ in model.named_parameters() if n.startswith("transformer.h.1.")]
    dataset = dataset_batches(N_EXAMPLES, 4)
    matrix = brute_force_dataset_matrix(model, dataset, names, N_EXAMPLES)
    return model, names, dataset, matrix


def _offsets(world, **kwargs):
    model, names, dataset, _ = world
    products = ReferenceProducts(model, names)
    assert products.truncated
    offsets = AuxOffsets(N_EXAMPLES, products, dtype=F64, optimizer="sgd", **kwargs)
    offsets.prepare(dataset)
    return offsets


def _micro_step(offsets, batch, size, fused):
    """The trainer's order: reference log-probs (fused: from the offsets), loss, backward."""
    if fused:
        ref = offsets.reference_logps(batch)
        assert_close(ref, offsets.products.logps(batch), ops=100)
    chosen, rejected = offsets.deltas(batch["aux_index"])
    margins = 0.1 * batch["aux_index"].to(F64) - 0.5
    (-F.logsigmoid(margins + chosen - rejected).sum() / size).backward()
    offsets.accumulate(batch)


@pytest.mark.parametrize("mode", ["global", "batch"])
@pytest.mark.parametrize("keep", [False, True])
def test_fused_equals_separate_passes(world, mode, keep):
    """6 steps of 2 micro-batches (one row repeated across them): same δ and u, to round-off."""
    _, _, dataset, matrix = world
    kwargs = dict(mode=mode, lambda_null=2.0, delta_lr=0.2)
    if mode == "batch":
        kwargs["lambda_amp"] = 0.1
    fused = _offsets(world, keep_reference_graph=keep, **kwargs)
    plain = _offsets(world, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        rows = torch.randperm(N_EXAMPLES, generator=gen)[:5].tolist()
        halves = (rows[:3], rows[2:])
        for offsets, is_fused in ((fused, True), (plain, False)):
            for half in halves:
                _micro_step(offsets, select(dataset, half), 6, is_fused)
            offsets.step(6)
        assert_close(fused.table(), plain.table(), ops=100)
        assert len(fused.linearizations) == 0      # the step took or dropped them all
    assert fused.table().abs().max() > 1e-3
    if mode == "global":
        assert_close(fused.u, plain.u, ops=100)
        assert_close(fused.u, matrix @ fused.table().reshape(-1), ops=1e3)


def test_fused_tangent_goes_stale_when_u_changes(world):
    """A fused pass made before u changed (here: recompute_u after a δ edit) is not used:
    the step's JVP is recomputed with the current u."""
    _, _, dataset, _ = world
    fused, plain = (_offsets(world, mode="global", lambda_null=2.0, delta_lr=0.2)
                    for _ in range(2))
    for offsets, is_fused in ((fused, True), (plain, False)):
        _micro_step(offsets, select(dataset, [0, 1, 2]), 3, is_fused)
        offsets.step(3)
        _micro_step(offsets, select(dataset, [3, 4, 5]), 3, is_fused)   # tangent: u of now
        with torch.no_grad():
            offsets.raw[14:16] = torch.tensor([0.3, -0.2], dtype=F64)    # row 7 edited ...
        offsets.recompute_u(dataset)                                     # ... u follows
        offsets.step(3)
    assert_close(fused.table(), plain.table(), ops=100)
    assert_close(fused.u, plain.u, ops=100)


def test_reference_logps_needs_aux_index(world):
    offsets = _offsets(world, mode="global")
    batch = dict(select(world[2], [0, 1]))
    del batch["aux_index"]
    with pytest.raises(ValueError, match="aux_index"):
        offsets.reference_logps(batch)


def test_linearization_queue_takes_in_order_and_drops_stale_tangents():
    """Filed per rows, taken oldest first; a linearization made under another tangent version
    is taken (and so dropped) but not returned; clear() empties the queue."""
    from auxdpo.offsets.micro_batch import LinearizationQueue

    queue = LinearizationQueue()
    first, second, third = object(), object(), object()
    rows, other = torch.tensor([3, 1]), torch.tensor([0])
    queue.file(rows, first, version=1)
    queue.file(rows, second, version=1)
    queue.file(other, third, version=0)
    assert len(queue) == 3
    assert queue.take(rows, 1) is first
    assert queue.take(other, 1) is None                  # stale: made for version 0
    assert queue.take(torch.tensor([1, 3]), 1) is None   # other rows (order matters)
    assert len(queue) == 1
    queue.clear()
    assert len(queue) == 0 and queue.take(rows, 1) is None


def test_batch_index_and_occurrence_slots():
    from auxdpo.offsets.micro_batch import batch_index, check_index, occurrence_slots

    batch = {"aux_index": torch.tensor([[2], [0]]), "input_ids": torch.zeros(4, 3)}
    index = batch_index(batch, 5, "cpu")
    assert index.tolist() == [2, 0]
    slots = torch.tensor([[0, 1], [2, 3], [4, 4], [5, 6], [7, 8]])     # row 2: one response
    assert occurrence_slots(slots, index).tolist() == [4, 0, 4, 1]    # chosen, then rejected
    with pytest.raises(ValueError, match="out of range"):
        check_index(torch.tensor([5]), 5, "cpu")
    with pytest.raises(ValueError, match="2B rows"):
        batch_index(dict(batch, input_ids=torch.zeros(3, 3)), 5, "cpu")
