"""AuxOffsets' ``global`` mode (paper Sec. 4.2): the penalty λ‖Aδ/(2n)‖² over the whole
dataset, kept exact with u = A·δ (:class:`GlobalModeMixin`).

Per step the batch's penalty gradient is 2λ/(2n)²·A_Bᵀu (one JVP per micro-batch), then
u += A_B·Δδ_B (one VJP); :meth:`GlobalModeMixin.recompute_u` rebuilds u from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from auxdpo.offsets.collectives import all_reduce_, broadcast_, rows_owned_elsewhere
from auxdpo.offsets.constraints import first_occurrences
from auxdpo.offsets.micro_batch import Batch, occurrence_slots

__all__ = ["GlobalModeMixin"]


class GlobalModeMixin:
    """The global penalty's gradient and u's updates, for :class:`auxdpo.offsets.AuxOffsets`."""

    def _global_penalty_grad(self, products, occurrences, global_batch_size,
                             penalty_grad) -> float:
        """Adds (n/G)·2λ/(2n)²·f·A_Bᵀu to the batch's slots; returns λ‖u/(2n)‖² (Sec. 4.2)."""
        n = self.num_examples
        penalty = self.lambda_null * float((self.u / (2 * n)).pow(2).sum())  # λ‖Aδ/(2n)‖²
        if not torch.any(self.u != 0):
            return penalty
        # Unbiased minibatch estimate of the full gradient up to the factor n/G of the mean loss.
        scale = (n / global_batch_size) * 2 * self.lambda_null / (2 * n) ** 2
        for batch, slots in zip(products, occurrences):
            directional = batch.jvp_u(self.u).to(self.dtype)               # A_Bᵀu, (2B,)
            penalty_grad.index_add_(0, slots, self._per_occurrence(scale * directional, slots))
        return penalty

    def _add_to_u(self, products, occurrences, change: torch.Tensor) -> None:
        """u += A·Δδ: every changed slot counted once (its first occurrence in the step, over
        micro-batches and processes), with cotangent ω_k·Δδ_k."""
        seen = rows_owned_elsewhere(occurrences, self.num_slots)
        update = torch.zeros_like(self.u)
        for batch, slots in zip(products, occurrences):
            keep = first_occurrences(slots.cpu(), seen).to(self.device)
            cotangent = change[slots] * keep
            if not self._unit_weights:
                cotangent = cotangent * self.weights[slots]
            if torch.any(cotangent != 0):
                update += batch.vjp(cotangent).to(self.dtype)
            batch.release()
        self.u += all_reduce_(update)                    # every process: the same A_B·Δδ_B
        self._u_version += 1

    def recompute_u(self, batches: Iterable[Batch] | None) -> None:
        """u = A·δ from scratch (global mode; a no-op in the others).

        ``batches`` must cover every dataset row whose δ is non-zero; rows seen twice count
        once, and each row's responses count with f_k (their c_k occurrences sum to ω_k).
        One VJP per batch; none while δ = 0.
        """
        if self.mode != "global":
            return
        values = self.values()
        self.u = torch.zeros(self.products.dim, dtype=self.dtype, device=self.device)
        self._u_version += 1
        if not torch.any(values != 0):
            return
        if batches is None:
            raise ValueError("recompute_u needs the dataset batches (pass them to prepare())")
        seen = torch.zeros(self.num_examples, dtype=torch.bool)
        for batch in batches:
            index = self._batch_index(batch)
            keep = first_occurrences(index.cpu(), seen).to(self.device).repeat(2)
            slots = occurrence_slots(self.slots, index)
            cotangent = self._per_occurrence(values[slots] * keep, slots)
            if torch.any(cotangent != 0):
                self.u += self.products.vjp(batch, cotangent).to(self.dtype)
        missing = (~seen).to(self.device) & torch.any(values[self.slots] != 0, dim=1)
        if torch.any(missing):
            rows = torch.nonzero(missing).flatten()
            raise ValueError(f"recompute_u: {rows.numel()} dataset rows with non-zero δ are "
                             f"missing from the batches (first: {int(rows[0])})")
        broadcast_(self.u)          # each process passed over the whole dataset: keep rank 0's
