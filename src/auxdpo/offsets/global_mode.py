"""AuxOffsets' ``global`` mode (paper Sec. 4.2): the penalty λ‖Aδ/(2n)‖² over the whole
dataset, kept exact with u = A·δ (:class:`GlobalConstraint`, which owns u and its version).

Per step the batch's penalty gradient is 2λ/(2n)²·A_Bᵀu (one JVP per micro-batch), then
u += A_B·Δδ_B (one VJP); :meth:`GlobalConstraint.recompute_u` rebuilds u from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from auxdpo.offsets.collectives import all_reduce_, broadcast_, rows_owned_elsewhere
from auxdpo.offsets.constraints import StepInputs, first_occurrences
from auxdpo.offsets.keys import SlotWeights
from auxdpo.offsets.micro_batch import Batch, BatchProducts, batch_index, occurrence_slots
from auxdpo.offsets.products import ReferenceProducts
from auxdpo.offsets.rows import RowBacked, RowOffsets

__all__ = ["GlobalConstraint"]


class GlobalConstraint(RowBacked):
    """The global penalty over δ = ``rows`` and the running product u = A·δ ``(d,)``.

    ``version`` counts u's changes: a fused reference pass made with an older u carries a
    stale tangent (:class:`auxdpo.offsets.micro_batch.LinearizationQueue`).
    """

    mode = "global"
    fuses = True              # the fused reference pass carries u and is kept for the step
    exact_scale = False       # ā is probed (auxdpo.offsets.health)

    def __init__(self, rows: RowOffsets, products: ReferenceProducts, slots: torch.Tensor,
                 weights: SlotWeights, *, lambda_null: float, recompute_every: int,
                 dtype: torch.dtype) -> None:
        self.row_offsets, self.products, self.slots, self.weights = rows, products, slots, weights
        self.lambda_null, self.recompute_every, self.dtype = lambda_null, recompute_every, dtype
        self.num_examples, self.num_slots = slots.shape[0], rows.num_slots
        self.device = slots.device
        self.u = torch.zeros(products.dim, dtype=dtype, device=self.device)
        self.version = 0                 # bumped whenever u changes (fused JVPs go stale)

    # ---- the common interface -----------------------------------------------------------

    def tangent(self) -> torch.Tensor | None:
        """u (the products' dtype) for the fused pass's JVP; None while u = 0."""
        return self.u.to(self.products.dtype) if torch.any(self.u != 0) else None

    def prepare(self, batches: Iterable[Batch]) -> None:
        """u = A·δ (no product while δ = 0)."""
        self.recompute_u(batches)

    def step(self, inputs: StepInputs) -> dict[str, float]:
        """The row update with the penalty's gradient, then u += A_B·Δδ_B; returns
        ``aux/penalty`` (and ``aux/prior``)."""
        def penalty(delta: torch.Tensor, grad: torch.Tensor) -> dict[str, float]:
            return {"aux/penalty": self._penalty_grad(inputs, grad)}

        metrics, change = self.row_offsets.step(inputs, penalty)
        with torch.no_grad():
            self._add_to_u(inputs.products, inputs.occurrences, change)
        return metrics

    def after_step(self, num_steps: int, batches: Iterable[Batch] | None) -> None:
        """Recompute u from scratch every ``recompute_every`` steps."""
        if self.recompute_every and num_steps % self.recompute_every == 0:
            self.recompute_u(batches)

    def null_image(self) -> torch.Tensor:
        """‖Aδ‖ = ‖u‖ (for ``aux/null_residual``)."""
        return self.u.norm()

    def state_dict(self) -> dict:
        return dict(self.row_offsets.state_dict(), u=self.u.clone())

    def load_state_dict(self, state: dict) -> None:
        self.row_offsets.load_state_dict(state)
        self.u = state["u"].to(self.device, self.dtype).clone()
        self.version += 1

    # ---- the penalty and u ---------------------------------------------------------------

    def _penalty_grad(self, inputs: StepInputs, penalty_grad: torch.Tensor) -> float:
        """Adds (n/G)·2λ/(2n)²·f·A_Bᵀu to the batch's slots; returns λ‖u/(2n)‖² (Sec. 4.2)."""
        n = self.num_examples
        penalty = self.lambda_null * float((self.u / (2 * n)).pow(2).sum())  # λ‖Aδ/(2n)‖²
        if not torch.any(self.u != 0):
            return penalty
        # Unbiased minibatch estimate of the full gradient up to the factor n/G of the mean loss.
        scale = (n / inputs.global_batch_size) * 2 * self.lambda_null / (2 * n) ** 2
        for batch, slots in zip(inputs.products, inputs.occurrences):
            directional = batch.jvp_u(self.u).to(self.dtype)               # A_Bᵀu, (2B,)
            penalty_grad.index_add_(0, slots,
                                    self.weights.per_occurrence(scale * directional, slots))
        return penalty

    def _add_to_u(self, products: list[BatchProducts], occurrences: list[torch.Tensor],
                  change: torch.Tensor) -> None:
        """u += A·Δδ: every changed slot counted once (its first occurrence in the step, over
        micro-batches and processes), with cotangent ω_k·Δδ_k."""
        seen = rows_owned_elsewhere(occurrences, self.num_slots)
        update = torch.zeros_like(self.u)
        for batch, slots in zip(products, occurrences):
            keep = first_occurrences(slots.cpu(), seen).to(self.device)
            cotangent = change[slots] * keep
            if not self.weights.unit:
                cotangent = cotangent * self.weights.weights[slots]
            if torch.any(cotangent != 0):
                update += batch.vjp(cotangent).to(self.dtype)
            batch.release()
        self.u += all_reduce_(update)                    # every process: the same A_B·Δδ_B
        self.version += 1

    def recompute_u(self, batches: Iterable[Batch] | None) -> None:
        """u = A·δ from scratch.

        ``batches`` must cover every dataset row whose δ is non-zero; rows seen twice count
        once, and each row's responses count with f_k (their c_k occurrences sum to ω_k).
        One VJP per batch; none while δ = 0.
        """
        values = self.values()
        self.u = torch.zeros(self.products.dim, dtype=self.dtype, device=self.device)
        self.version += 1
        if not torch.any(values != 0):
            return
        if batches is None:
            raise ValueError("recompute_u needs the dataset batches (pass them to prepare())")
        seen = torch.zeros(self.num_examples, dtype=torch.bool)
        for batch in batches:
            index = batch_index(batch, self.num_examples, self.device)
            keep = first_occurrences(index.cpu(), seen).to(self.device).repeat(2)
            slots = occurrence_slots(self.slots, index)
            cotangent = self.weights.per_occurrence(values[slots] * keep, slots)
            if torch.any(cotangent != 0):
                self.u += self.products.vjp(batch, cotangent).to(self.dtype)
        missing = (~seen).to(self.device) & torch.any(values[self.slots] != 0, dim=1)
        if torch.any(missing):
            rows = torch.nonzero(missing).flatten()
            raise ValueError(f"recompute_u: {rows.numel()} dataset rows with non-zero δ are "
                             f"missing from the batches (first: {int(rows[0])})")
        broadcast_(self.u)          # every process: rank 0's u, bit for bit
