"""``aux/null_residual`` without A's units (docs/offsets.md, "Metrics returned by step").

‖Aδ‖/‖δ‖ is in the units of A's columns ω_k·g_k, g_k = ∇log π_θ₀(a_k|s_k), which grow with
response length and the number of trainable parameters, so its raw value cannot be judged.
It is divided here by ā, the root mean square of A's columns:

    ā² = (1/K) Σ_k ω_k² ‖g_k‖² = ‖A‖_F² / K,          null_residual = ‖Aδ‖ / (ā·‖δ‖).

For offsets with independent zero-mean entries E‖Aδ‖² = ā²‖δ‖², so the residual is ≈ 1 for a
δ that ignores the constraint and 0 for a δ in N(A); it does not change when A is scaled.
The batch mode's A_B has one column f_k·g_k per occurrence (f = ω/c), so its residual
‖A_Bδ_B‖/‖δ_B‖ is divided by the occurrences' root mean square ā_B instead,
ā_B² = (1/2n) Σ_k c_k f_k² ‖g_k‖².

ā is exact in projection mode (A is explicit). The global and batch modes estimate ā and ā_B
once, in ``prepare``, from the exact score norms ‖g‖ of the first :data:`PROBE_PAIRS` pairs
of the data (the first batches): one VJP per distinct response on a one-pair sub-batch, at
start-up only. ω is known for every slot, so only ‖g‖ is sampled (a ratio estimator):

    ā²  ≈ [(1/K) Σ_k ω_k²]      · Σ_o (ω²/c)‖g‖² / Σ_o ω²/c,
    ā_B² ≈ [(1/2n) Σ_k ω_k²/c_k] · Σ_o (ω/c)²‖g‖² / Σ_o (ω/c)²,

o over the probed occurrences (an occurrence of slot k weighs 1/c_k in ā, whose mean is over
slots). It is exact when ‖g‖ is the same for all responses, however skewed ω is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping

import torch

from auxdpo.offsets.collectives import broadcast_
from auxdpo.offsets.products import ReferenceProducts

__all__ = ["PROBE_PAIRS", "ColumnScales", "column_scales", "exact_column_scale",
           "probe_score_norms", "scaled_residual", "take_probe_batches"]

PROBE_PAIRS = 16

Batch = Mapping[str, torch.Tensor]


def take_probe_batches(batches: Iterable[Batch], pairs: int = PROBE_PAIRS
                       ) -> tuple[list[Batch], Iterable[Batch]]:
    """The first batches holding at least ``pairs`` pairs, and ``batches`` still whole (an
    iterator is chained back; a re-iterable is returned as it is)."""
    source = batches if isinstance(batches, Iterator) else iter(batches)
    taken: list[Batch] = []
    count = 0
    while count < pairs:
        batch = next(source, None)
        if batch is None:
            break
        taken.append(batch)
        count += int(batch["aux_index"].shape[0])
    if isinstance(batches, Iterator):
        batches = itertools.chain(taken, batches)
    return taken, batches


def one_pair(batch: Batch, row: int) -> dict[str, torch.Tensor]:
    """The sub-batch of pair ``row`` of a TRL preference batch (its chosen and rejected rows
    of the ``2B``-row tensors, its entry of the ``B``-row ones)."""
    pairs = batch["aux_index"].shape[0]
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == 2 * pairs:
            out[key] = value[[row, pairs + row]]
        elif isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == pairs:
            out[key] = value[row:row + 1]
        else:
            out[key] = value
    return out


def probe_score_norms(products: ReferenceProducts, batch: Batch, occurrences: torch.Tensor,
                      pairs: int = PROBE_PAIRS, known: dict[int, float] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slots, squared_norms)``, both ``(2m,)``: the slot and ‖∇log π_θ₀‖² of each response
    of the batch's first m = min(``pairs``, B) pairs (chosen 0..m−1, then rejected), exact,
    float64. ``occurrences`` ``(2B,)``: the batch's slots (chosen, then rejected). ``known``:
    squared norms of slots measured before (not measured again; updated in place)."""
    size = batch["aux_index"].shape[0]
    count = min(pairs, size)
    positions = list(range(count)) + list(range(size, size + count))
    norms = {} if known is None else known
    for position in positions:
        slot = int(occurrences[position])
        if slot in norms:
            continue
        side, row = divmod(position, size)
        cotangent = torch.zeros(2, dtype=products.dtype, device=products.device)
        cotangent[side] = 1
        score = products.vjp(one_pair(batch, row), cotangent)
        norms[slot] = float(score.double().pow(2).sum())
    slots = occurrences[positions].cpu()
    return slots, torch.tensor([norms[int(s)] for s in slots], dtype=torch.float64)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> float:
    total = float(weights.sum())
    return float((weights * values).sum()) / total if total > 0 else float(values.mean())


def column_scales(slots: torch.Tensor, squared_norms: torch.Tensor, weights: torch.Tensor,
                  counts: torch.Tensor) -> tuple[float, float]:
    """(ā, ā_B) from probed occurrences (module docstring): slot ``slots`` ``(m,)`` with ‖g‖²
    ``squared_norms``; ``weights`` ω and ``counts`` c ``(K,)`` of every slot."""
    omega = weights.detach().cpu().double()
    c = counts.detach().cpu().double()
    per_slot = omega.pow(2).mean() * _weighted_mean(squared_norms,
                                                    omega[slots].pow(2) / c[slots])
    per_occurrence = (omega.pow(2) / c).sum() / c.sum() * _weighted_mean(
        squared_norms, (omega[slots] / c[slots]).pow(2))
    return float(per_slot) ** 0.5, float(per_occurrence) ** 0.5


def exact_column_scale(jacobian_t: torch.Tensor) -> float:
    """ā of an explicit Aᵀ ``(K, d)``: ‖A‖_F/√K."""
    return float(jacobian_t.double().norm()) / max(jacobian_t.shape[0], 1) ** 0.5


def scaled_residual(image_norm: float | torch.Tensor, delta_norm: float | torch.Tensor,
                    scale: float | None) -> float:
    """‖Aδ‖/(ā·‖δ‖); 0 when δ = 0 or ā is 0 or unknown."""
    denominator = float(delta_norm) * (scale or 0.0)
    return float(image_norm) / denominator if denominator > 0 else 0.0


class ColumnScales:
    """ā and ā_B of one :class:`auxdpo.offsets.AuxOffsets` (``column_scale``,
    ``occurrence_scale``; None until measured): probed from score norms in the global and
    batch modes (:meth:`probe`), exact from Aᵀ in projection mode (:meth:`set_exact`)."""

    def __init__(self) -> None:
        self.column_scale: float | None = None
        self.occurrence_scale: float | None = None

    @property
    def measured(self) -> bool:
        return self.column_scale is not None

    def set_exact(self, jacobian_t: torch.Tensor) -> None:
        """ā of an explicit Aᵀ ``(K, d)`` (:func:`exact_column_scale`)."""
        self.column_scale = exact_column_scale(jacobian_t)

    def probe(self, products: ReferenceProducts, batches: list[Batch],
              occurrences: list[torch.Tensor], weights: torch.Tensor,
              counts: torch.Tensor) -> None:
        """ā and ā_B from the first :data:`PROBE_PAIRS` pairs of ``batches`` (every process:
        rank 0's, bit for bit); ``occurrences``: each batch's ``(2B,)`` slots, ``weights``
        ω and ``counts`` c ``(K,)``."""
        slots, norms, known = [], [], {}
        left = PROBE_PAIRS
        for batch, occurrence in zip(batches, occurrences):
            if left <= 0:
                break
            probed = probe_score_norms(products, batch, occurrence, left, known)
            slots.append(probed[0])
            norms.append(probed[1])
            left -= probed[0].numel() // 2
        if not slots:
            return
        scales = column_scales(torch.cat(slots), torch.cat(norms), weights, counts)
        packed = broadcast_(torch.tensor(scales, dtype=torch.float64, device=weights.device))
        self.column_scale, self.occurrence_scale = (float(v) for v in packed)
