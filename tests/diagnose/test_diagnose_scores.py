"""The score matrix held whole or sketched: the choice by memory, the sketch against the dense
SVD on a known matrix (exact when its size reaches the rank; below it, the captured share is
1 − ‖A − QZ‖²/‖A‖² of the matrix it was fed), each response counted once however many pair
sides it fills, and the whole diagnostic the same both ways on the tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from auxdpo.cli import main
from auxdpo.diagnose.scores import (
    DENSE_BYTES,
    SKETCH_BYTES,
    DenseScores,
    SketchedScores,
    choose_sketch,
    score_matrix_of,
)
from auxdpo.train.data import AUX_INDEX

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]


def test_choose_sketch_holds_a_matrix_whole_while_it_fits_then_all_of_it_in_a_sketch():
    fits = DENSE_BYTES // 8 // 1000                          # d with d × 1000 float64 = budget
    assert choose_sketch(fits, 1000) == 0
    assert choose_sketch(fits + 1, 1000) == 1000             # exact: Q holds every direction
    # A 0.6B model's LoRA on one block (40,960 parameters), 20,000 responses: s = K.
    assert choose_sketch(40_960, 20_000) == 20_000
    # Full fine-tuning of 10⁸ parameters: Q in 4 GiB of float32 has 10 columns.
    assert choose_sketch(10 ** 8, 20_000) == SKETCH_BYTES // (4 * 10 ** 8) == 10
    assert choose_sketch(10 ** 8, 20_000, itemsize=8) == 5
    assert choose_sketch(10 ** 9, 50, 100) == 50              # never more columns than K
    assert choose_sketch(10 ** 9, 5000, 0) == 0               # 0: whole, whatever the size
    assert choose_sketch(10, 5000, 64) == 64                  # a size asked for is kept
    with pytest.raises(ValueError, match="sketch size"):
        choose_sketch(10, 10, -1)


class _Products:
    """Stands in for ReferenceProducts: response j of a batch has score column A[:, slot]."""

    def __init__(self, matrix: torch.Tensor, slot_map: torch.Tensor):
        self.matrix, self.slot_map = matrix, slot_map
        self.dim, self.device, self.dtype = matrix.shape[0], torch.device("cpu"), F64
        self.calls = 0

    def _slots(self, batch):
        rows = self.slot_map[batch[AUX_INDEX]]
        return torch.cat([rows[:, 0], rows[:, 1]])

    def jacobian(self, batch, step=None, rows=None):
        self.calls += 1
        slots = self._slots(batch)
        return self.matrix[:, slots if rows is None else slots[rows]].T

    def logps(self, batch):
        return -self._slots(batch).to(F64)


def _setting(seed=0, d=60, k=12, rank=7):
    """A rank-``rank`` (d × k) score matrix; 3 prompts of 4 responses, every pair once, in
    batches of 4 rows (so most responses come back in several batches)."""
    g = torch.Generator().manual_seed(seed)
    matrix = torch.randn(d, rank, generator=g, dtype=F64) @ torch.randn(
        rank, k, generator=g, dtype=F64)
    pairs = [(p * 4 + a, p * 4 + b) for p in range(3) for a in range(4) for b in range(a + 1, 4)]
    slot_map = torch.tensor(pairs)
    batches = [{AUX_INDEX: torch.arange(i, min(i + 4, len(pairs)))}
               for i in range(0, len(pairs), 4)]
    trainer = SimpleNamespace(dataset_batches=lambda: iter(batches))
    keys = SimpleNamespace(slots=slot_map, num_slots=k)
    return matrix, trainer, keys, _Products(matrix, slot_map)


def test_dense_scores_are_the_matrix_and_count_each_response_once():
    matrix, trainer, keys, products = _setting()
    scores = score_matrix_of(trainer, products, keys, sketch=0, show_progress=False)
    assert isinstance(scores, DenseScores)
    torch.testing.assert_close(scores.columns, matrix, rtol=0, atol=0)
    torch.testing.assert_close(scores.logp0, -torch.arange(12, dtype=F64))
    first = torch.cat([f for _, _, f in scores.batches])
    assert first.numel() == 12                               # 12 responses in 36 pair sides
    # Z has the matrix's rank and reproduces its Gram matrix.
    assert scores.coords.shape[0] == 7
    scale = float(matrix.norm()) ** 2
    torch.testing.assert_close(scores.coords.T @ scores.coords, matrix.T @ matrix,
                               rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("power", [0, 1])
def test_a_sketch_as_large_as_the_rank_is_exact(power):
    matrix, trainer, keys, products = _setting()
    scores = score_matrix_of(trainer, products, keys, sketch=9, power=power,
                             show_progress=False)
    assert isinstance(scores, SketchedScores)
    scale = float(matrix.norm()) ** 2
    assert scores.coords.shape[0] == 7                     # the rank, found inside the sketch
    torch.testing.assert_close(scores.coords.T @ scores.coords, matrix.T @ matrix,
                               rtol=0, atol=1e-10 * scale)
    info = scores.info()
    assert info["captured"] == pytest.approx(1.0, abs=1e-10) and not info["saturated"]
    # One Jacobian per pass of each batch that brings a response not seen before.
    fresh = sum(1 for _, _, first in scores.batches if first.numel())
    assert fresh < len(scores.batches)
    assert info["passes"] == 2 + power and products.calls == fresh * info["passes"]
    # A step U·y lies in the scores' span: its first order Aᵀ·step is Zᵀ·y.
    y = torch.randn(7, dtype=F64)
    step = scores.parameter_step(y)
    torch.testing.assert_close(matrix.T @ step, scores.coords.T @ y, rtol=0,
                               atol=1e-10 * float(matrix.norm() * y.norm()))


def test_a_column_per_response_needs_no_power_iteration():
    matrix, trainer, keys, products = _setting()
    scores = score_matrix_of(trainer, products, keys, sketch=12, power=3, show_progress=False)
    assert scores.info()["power_iterations"] == 0 and scores.info()["passes"] == 2
    assert scores.info()["captured"] == pytest.approx(1.0, abs=1e-10)


def test_a_sketch_below_the_rank_reports_the_share_it_keeps():
    matrix, trainer, keys, products = _setting(rank=10)
    scores = score_matrix_of(trainer, products, keys, sketch=4, power=1, seed=3,
                             show_progress=False)
    info = scores.info()
    assert info["saturated"] and scores.coords.shape[0] == 4
    q = scores.basis
    residual = matrix - q @ (q.T @ matrix)
    expected = 1 - float(residual.norm() ** 2 / matrix.norm() ** 2)
    assert 0 < info["captured"] < 1
    assert info["captured"] == pytest.approx(expected, abs=1e-12)
    # One power iteration keeps at least as much as the best rank-4 share's lower bound of
    # a plain Gaussian sketch would on this spectrum; it cannot keep more than the SVD's.
    singular = torch.linalg.svdvals(matrix)
    best = float(singular[:4].pow(2).sum() / singular.pow(2).sum())
    assert info["captured"] <= best + 1e-12 and info["captured"] > 0.8 * best


def test_the_diagnostic_is_the_same_sketched_to_the_responses(capsys, monkeypatch):
    """The tiny recipe (16 responses, 37k parameters): dense and a 16-column sketch give the
    same report to float32 round-off (the model's Jacobians are float32)."""
    monkeypatch.chdir(ROOT)

    def run(*extra):
        assert main(["diagnose", "--config", "examples/tiny_auxdpo.yaml", "--json",
                     "--bootstrap", "0", "--beta", "1000", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    dense, sketched = run("--sketch", "0"), run("--sketch", "16")
    assert dense["scores"] == {"method": "dense"}
    assert sketched["scores"]["method"] == "sketch" and not sketched["scores"]["saturated"]
    assert sketched["score_rank"] == dense["score_rank"]
    assert sketched["null_dim"] == dense["null_dim"]
    for name in ("dpo", "auxdpo"):
        assert sketched["predicted_gap"][name] == pytest.approx(dense["predicted_gap"][name],
                                                                abs=1e-5)
    for key in ("step_cosine", "score_shift", "step_norm"):
        assert sketched[key] == pytest.approx(dense[key], rel=1e-3), key
    # The exact log-prob change along a step this small (β = 1000) is a float32 difference of
    # two log-probs: the share the first order misses (≈ 1e-3) moves by ≈ 2e-4 with the path
    # and the thread count (measured 1.07e-3 to 1.24e-3).
    assert dense["linearisation_error"] < 0.01
    assert sketched["linearisation_error"] == pytest.approx(dense["linearisation_error"],
                                                            abs=5e-4)
