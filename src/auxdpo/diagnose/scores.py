"""The data's score matrix A = [g_k], g_k = ∇log π_θ₀(a_k|s_k) over the trainable tensors
(d parameters × K unique responses), in the form the local model needs: coordinates Z of its
columns in an orthonormal basis of their span, A ≈ U Z.

Two ways to get them, chosen by memory (:func:`choose_sketch`):

* **dense** (:class:`DenseScores`): A held in host memory in float64, its thin SVD
  (:func:`auxdpo.diagnose.local.score_coordinates`); exact; d·K·8 bytes.
* **sketched** (:class:`SketchedScores`): a randomized range finder (Halko, Martinsson and
  Tropp 2011, Alg. 4.3/4.4) fed one response's gradient at a time, so A is never held: pass 1
  accumulates Y = A·Ω (Ω Gaussian, K × s), each power iteration one more pass
  Y ← A·(Aᵀ·Q) with Q = orth(Y), and the last pass gives Z = QᵀA and ‖A‖_F, so the share of
  A's energy the sketch captures, ‖Z‖²/‖A‖², is exact rather than estimated. Memory: d × s
  for Q (on the model's device) and s × K for Z. With s ≥ rank(A) it equals the dense way up
  to round-off (tested); below, the local model is solved in the sketch's top-s score
  directions, and the report says how much of A that keeps. The predictions depend on A only
  through its row space (which reward vectors over the responses the scores can express), so
  a truncated sketch is a smaller model, not a noisy one: keep s ≥ rank (``"auto"`` does
  while Q fits :data:`SKETCH_BYTES`).

Every pass computes each unique response's gradient once: a response that fills several
pair sides appears in several rows of the batches but is counted at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from auxdpo.diagnose.local import score_coordinates
from auxdpo.offsets.micro_batch import occurrence_slots
from auxdpo.progress import progress
from auxdpo.train.data import AUX_INDEX

__all__ = ["DENSE_BYTES", "SKETCH_BYTES", "SKETCH_POWER", "DenseScores", "SketchedScores",
           "choose_sketch", "score_matrix_of"]

DENSE_BYTES = 2 * 1024 ** 3   # A (d × K, float64, host) up to this size is held whole
SKETCH_BYTES = 4 * 1024 ** 3  # the sketch's basis Q (d × s, on the model's device) up to this
SKETCH_POWER = 1              # power iterations of the sketch (one pass over the data each)


def choose_sketch(dim: int, responses: int, sketch: int | str = "auto",
                  itemsize: int = 4) -> int:
    """The sketch size s for ``dim`` × ``responses`` scores: 0 (dense) when ``sketch`` is 0,
    or ``"auto"`` and A fits :data:`DENSE_BYTES` in float64. Otherwise ``"auto"`` takes as many
    columns as :data:`SKETCH_BYTES` holds for Q (``itemsize`` bytes a number), never more than
    K: with s = K the sketch is exact (it spans all of A) and only its memory differs from the
    dense way. A smaller s (asked for, or forced by the memory) solves the local model in the
    top-s score directions only: a model with fewer directions than the real one, which can
    show misspecification the real one does not have (the report marks it ``saturated``)."""
    if sketch == "auto":
        if dim * responses * 8 <= DENSE_BYTES:
            return 0
        sketch = max(1, SKETCH_BYTES // max(1, dim * itemsize))
    sketch = int(sketch)
    if sketch < 0:
        raise ValueError(f"the sketch size must be >= 0 (0: the dense score matrix), got {sketch}")
    return min(sketch, responses)


def _batches(trainer, keys, show_progress: bool, desc: str):
    """Each batch with the slot of every row and the rows that are a response's first
    occurrence in the data (in ``trainer.dataset_batches()``'s fixed order)."""
    seen = torch.zeros(keys.num_slots, dtype=torch.bool)
    out = []
    for batch in progress(trainer.dataset_batches(), desc=desc, enabled=show_progress or None):
        slots = occurrence_slots(keys.slots, batch[AUX_INDEX].cpu())
        first = []
        for row, slot in enumerate(slots.tolist()):
            if not seen[slot]:
                seen[slot] = True
                first.append(row)
        out.append((batch, slots, torch.tensor(first, dtype=torch.long)))
    return out


@dataclass
class DenseScores:
    """A held whole (float64, host memory): exact coordinates by its thin SVD."""

    columns: torch.Tensor                      # A (d, K)
    logp0: torch.Tensor                        # log π_θ₀ (K,)
    batches: list                              # (batch, slots, first rows)
    coords: torch.Tensor = field(init=False)   # Z (r, K)
    basis: torch.Tensor = field(init=False)    # U (d, r)

    def __post_init__(self):
        self.coords, self.basis = score_coordinates(self.columns)

    def parameter_step(self, y: torch.Tensor) -> torch.Tensor:
        """θ − θ₀ direction U·y ``(d,)`` (float64, host) for coordinates ``y`` ``(r,)``."""
        return self.basis @ y

    def reference_rows(self, products, batch, slots, first) -> torch.Tensor:
        """The score rows of a batch's first occurrences at θ₀ ``(n, d)``."""
        del products, batch
        return self.columns[:, slots[first]].T

    @property
    def norm(self) -> float:
        return float(self.columns.norm())

    def info(self) -> dict[str, Any]:
        return {"method": "dense"}


@dataclass
class SketchedScores:
    """A sketched to ``size`` columns (module docstring); Z exact for the sketch's basis."""

    size: int
    power: int
    logp0: torch.Tensor
    batches: list
    coords: torch.Tensor                       # Z' (r, K) in the basis Q·V
    basis: torch.Tensor                        # Q (d, s) on the products' device
    rotation: torch.Tensor                     # V (s, r): the span of Z within Q's
    sketch_coords: torch.Tensor                # Z = QᵀA (s, K)
    total_norm: float                          # ‖A‖_F
    passes: int

    def parameter_step(self, y: torch.Tensor) -> torch.Tensor:
        """θ − θ₀ direction Q·V·y ``(d,)`` (host, float64; Q's dtype in the product)."""
        direction = (self.rotation @ y.to(torch.float64)).to(self.basis)
        return (self.basis @ direction).to(torch.float64).cpu()

    def reference_rows(self, products, batch, slots, first) -> torch.Tensor:
        """The score rows of a batch's first occurrences at θ₀ ``(n, d)``, recomputed."""
        del slots
        return products.jacobian(batch, rows=first).to(torch.float64).cpu()

    @property
    def norm(self) -> float:
        return self.total_norm

    def info(self) -> dict[str, Any]:
        captured = float(self.sketch_coords.norm() ** 2) / self.total_norm ** 2 \
            if self.total_norm > 0 else 1.0
        return {"method": "sketch", "size": self.size, "power_iterations": self.power,
                "passes": self.passes, "captured": min(captured, 1.0),
                "saturated": self.size < self.coords.shape[1]
                and int(self.coords.shape[0]) >= self.size}


def _sketched(products, batches, num_slots: int, size: int, power: int, seed: int,
              show_progress: bool) -> SketchedScores:
    device = products.device
    dtype = torch.float64 if products.dtype == torch.float64 else torch.float32
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(num_slots, size, generator=generator, dtype=torch.float64)
    logp0 = torch.zeros(num_slots, dtype=torch.float64)
    passes = 0

    def each(desc):
        nonlocal passes
        passes += 1
        for batch, slots, first in progress(batches, desc=desc,
                                            enabled=show_progress or None):
            if first.numel():
                rows = products.jacobian(batch, rows=first).to(dtype)         # (n, d)
                yield batch, slots[first], first, rows

    y = torch.zeros(products.dim, size, dtype=dtype, device=device)
    for batch, slots, first, rows in each("sketch"):
        y += rows.T @ omega[slots].to(device, dtype)
        logp0[slots] = products.logps(batch)[first.to(device)].to(torch.float64).cpu()
    for _ in range(power):
        q = torch.linalg.qr(y)[0]
        y = torch.zeros_like(y)
        for _, _, _, rows in each("power iteration"):
            y += rows.T @ (rows @ q)                                   # A·Aᵀ·Q
    q = torch.linalg.qr(y)[0]
    del y
    z = torch.zeros(size, num_slots, dtype=torch.float64)
    total = 0.0
    for _, slots, _, rows in each("coordinates"):
        z[:, slots] = (q.T @ rows.T).to(torch.float64).cpu()
        total += float(rows.to(torch.float64).pow(2).sum())
    coords, rotation = score_coordinates(z)
    return SketchedScores(size, power, logp0, batches, coords, q, rotation, z,
                          total ** 0.5, passes)


def score_matrix_of(trainer, products, keys, *, sketch: int | str = "auto",
                    power: int = SKETCH_POWER, seed: int = 0, show_progress: bool = True):
    """The scores of the trainer's prepared data at θ₀: :class:`DenseScores` or
    :class:`SketchedScores` (:func:`choose_sketch`)."""
    batches = _batches(trainer, keys, show_progress=False, desc="batches")
    itemsize = 8 if products.dtype == torch.float64 else 4
    size = choose_sketch(products.dim, keys.num_slots, sketch, itemsize)
    if size:
        # With a column per response, Y = A·Ω already spans all of A: no power iteration.
        power = power if size < keys.num_slots else 0
        return _sketched(products, batches, keys.num_slots, size, power, seed, show_progress)
    columns = torch.zeros(products.dim, keys.num_slots, dtype=torch.float64)
    logp0 = torch.zeros(keys.num_slots, dtype=torch.float64)
    for batch, slots, first in progress(batches, desc="scores", enabled=show_progress or None):
        if first.numel():
            index = first.to(products.device)
            columns[:, slots[first]] = products.jacobian(batch, rows=first).to(
                torch.float64).T.cpu()
            logp0[slots[first]] = products.logps(batch)[index].to(torch.float64).cpu()
    return DenseScores(columns, logp0, batches)
