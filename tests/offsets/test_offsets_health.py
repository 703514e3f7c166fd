"""``aux/null_residual`` = ‖Aδ‖/(ā‖δ‖) (auxdpo.offsets.health): the probe's score norms
against explicit per-response gradients, ā and ā_B by hand, and the metric of each mode
against brute force (float64, tiny GPT-2, response keys)."""

from __future__ import annotations

import pytest
import torch

from auxdpo.offsets import AuxOffsets
from auxdpo.offsets.health import column_scales, probe_score_norms
from auxdpo.offsets.keys import keys_from_ids
from auxdpo.offsets.micro_batch import occurrence_slots
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import (
    brute_force_columns,
    brute_force_dataset_matrix,
    comparison_rows,
    id_batch,
    id_batches,
    tiny_gpt2,
)
from tolerance import assert_close

F64 = torch.float64


@pytest.fixture(scope="module")
def world():
    """3 prompts × 3 responses in 4 pairs (n = 12, K = 9); batches of 5 rows."""
    ids = comparison_rows()
    model = tiny_gpt2("sdpa", layers=1).eval()
    names = [n for n, _ in model.named_parameters()]
    data = id_batches(ids, 5)
    keys = keys_from_ids(*ids)
    row_matrix = brute_force_dataset_matrix(model, data, names, len(ids[0]))
    columns = torch.zeros(row_matrix.shape[0], keys.num_slots, dtype=F64)
    columns[:, keys.slots.reshape(-1)] = row_matrix                   # g_k, (d, K)
    return {"ids": ids, "model": model, "names": names, "data": data, "keys": keys,
            "columns": columns, "n": len(ids[0])}


def _expected_scales(world, weights):
    """ā, ā_B from the explicit columns: the probe takes every one of the 12 rows (< 16
    pairs), so the ratio estimates are exact: ā² = (1/K)Σ_k ω_k²‖g_k‖², ā_B² = mean over
    the 24 occurrences of (ω/c)²‖g‖²."""
    norms = world["columns"].pow(2).sum(0)
    counts = world["keys"].counts().to(F64)
    slot_mean = (weights**2 * norms).mean()
    occurrence_mean = (weights**2 / counts * norms).sum() / counts.sum()
    return float(slot_mean) ** 0.5, float(occurrence_mean) ** 0.5


def test_probe_norms_are_the_explicit_score_norms(world):
    batch = world["data"][0]
    products = ReferenceProducts(world["model"], world["names"])
    occurrences = occurrence_slots(world["keys"].slots, batch["aux_index"])
    slots, norms = probe_score_norms(products, batch, occurrences)
    explicit = brute_force_columns(world["model"], batch, world["names"]).pow(2).sum(0)
    assert slots.tolist() == occurrences.tolist()            # all 5 pairs (< 16), both sides
    positions = list(range(10))
    assert_close(norms, explicit[positions], ops=1e3)


def test_column_scales_by_hand():
    """ω = (2, 1, 3), c = (2, 1, 1): mean ω² = 14/3, Σ_k ω_k²/c_k / Σc = 12/4.
    Probe of slots 0, 1, 0, 2 with ‖g‖² 1, 4, 1, 9 (the whole data): ā² = 14/3 · (2·1 + 1·4 +
    2·1 + 9·9)/(2 + 1 + 2 + 9) = 89/3 (= (1/K)Σω²‖g‖²); ā_B² = 3 · (1 + 4 + 1 + 81)/12 = 87/4.
    Probe of slot 0 alone, ‖g‖² = 1: ā² = 14/3 · 1 and ā_B² = 3 · 1 (only ‖g‖ is sampled)."""
    weights, counts = torch.tensor([2.0, 1.0, 3.0], dtype=F64), torch.tensor([2, 1, 1])
    scale, occurrence_scale = column_scales(
        torch.tensor([0, 1, 0, 2]), torch.tensor([1.0, 4.0, 1.0, 9.0], dtype=F64),
        weights, counts)
    assert scale == pytest.approx((89 / 3) ** 0.5, rel=1e-13)
    assert occurrence_scale == pytest.approx((87 / 4) ** 0.5, rel=1e-13)
    scale, occurrence_scale = column_scales(torch.tensor([0, 0]),
                                            torch.tensor([1.0, 1.0], dtype=F64), weights, counts)
    assert scale == pytest.approx((14 / 3) ** 0.5, rel=1e-13)
    assert occurrence_scale == pytest.approx(3 ** 0.5, rel=1e-13)
    # ω = 0 on every probed slot: the plain mean of ‖g‖²
    scale, _ = column_scales(torch.tensor([1]), torch.tensor([4.0], dtype=F64),
                             torch.tensor([2.0, 0.0, 3.0], dtype=F64), counts)
    assert scale == pytest.approx((13 / 3 * 4) ** 0.5, rel=1e-13)


@pytest.mark.parametrize("mode, weighting", [("global", "prompt"), ("global", "multiplicity"),
                                             ("batch", "prompt")])
def test_residual_is_scaled_by_the_probed_columns(world, mode, weighting):
    products = ReferenceProducts(world["model"], world["names"])
    offsets = AuxOffsets(world["n"], products, keys=world["keys"], mode=mode, dtype=F64,
                         lambda_null=0.5, null_weights=weighting, delta_lr=0.1)
    offsets.prepare(world["data"])
    weights = offsets.weights
    scale, occurrence_scale = _expected_scales(world, weights)
    assert offsets.column_scale == pytest.approx(scale, rel=1e-10)
    assert offsets.occurrence_scale == pytest.approx(occurrence_scale, rel=1e-10)
    columns, counts = world["columns"], world["keys"].counts().to(F64)
    for rows in ([0, 5, 9, 2], [1, 4, 4, 11], [3, 7, 8, 10]):
        batch = id_batch(world["ids"], rows)
        before = offsets.values()
        chosen, rejected = offsets.deltas(batch["aux_index"])
        (-(chosen - rejected + torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=F64)).sigmoid()
         .log().sum() / 4).backward()
        offsets.accumulate(batch)
        metrics = offsets.step(4)
        values = offsets.values()
        if mode == "global":                    # after the step: ‖Aδ‖/(ā‖δ‖)
            image = columns @ (weights * values)
            expected = float(image.norm() / values.norm()) / scale
        else:                                   # before the step, the batch's A_B and δ_B
            occurrences = world["keys"].slots[rows].T.reshape(-1)
            image = columns[:, occurrences] @ ((weights / counts)[occurrences]
                                               * before[occurrences])
            norm = before[occurrences].norm()
            expected = float(image.norm() / norm) / occurrence_scale if norm > 0 else 0.0
        assert metrics["aux/null_residual"] == pytest.approx(expected, rel=1e-9)
    assert metrics["aux/null_residual"] > 0.01


def test_residual_is_one_for_random_offsets_and_zero_in_the_null_space(world):
    """Projection mode knows A: ā = ‖A‖_F/√K exactly. Offsets with independent entries have
    E‖Aδ‖² = ā²‖δ‖² (mean of the squared residual ≈ 1 over many draws); a trained δ = Γc has
    residual at round-off."""
    names = ["transformer.ln_f.bias"]                                   # d = 16 < K = 24
    ids = comparison_rows(num_prompts=6, responses=4)
    n = len(ids[0])
    offsets = AuxOffsets(n, ReferenceProducts(world["model"], names), mode="projection",
                         keys=keys_from_ids(*ids), dtype=F64, delta_lr=0.1,
                         null_weights="multiplicity")
    offsets.prepare(id_batches(ids, 8))
    jacobian_t = offsets.jacobian_t
    assert offsets.column_scale == pytest.approx(
        float(jacobian_t.norm()) / jacobian_t.shape[0] ** 0.5, rel=1e-13)
    draws = torch.randn(4000, jacobian_t.shape[0], generator=torch.Generator().manual_seed(0),
                        dtype=F64)
    squared = (draws @ jacobian_t).pow(2).sum(1) / draws.pow(2).sum(1) / offsets.column_scale**2
    assert float(squared.mean()) == pytest.approx(1.0, abs=0.1)
    batch = id_batch(ids, list(range(8)))
    chosen, rejected = offsets.deltas(batch["aux_index"])
    (-(chosen - rejected).sigmoid().log().sum() / 8).backward()
    offsets.accumulate(batch)
    metrics = offsets.step(8)
    assert offsets.values().norm() > 0.05
    assert metrics["aux/null_residual"] < 1e-13
