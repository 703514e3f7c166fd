"""AuxOffsets' ``projection`` mode (paper Sec. 7.2): δ = Γc with Γ an orthonormal basis of
N(A), A = [ω_k ∇log π_θ₀(a_k|s_k)]_k over the slots, computed once (:class:`ProjectionMixin`)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from auxdpo.offsets.collectives import all_reduce_, broadcast_
from auxdpo.offsets.constraints import first_occurrences, null_space_basis
from auxdpo.offsets.health import exact_column_scale, scaled_residual
from auxdpo.offsets.micro_batch import Batch, occurrence_slots

__all__ = ["ProjectionMixin"]


class ProjectionMixin:
    """Building Γ and stepping c, for :class:`auxdpo.offsets.AuxOffsets`."""

    def _build_null_space(self, batches: Iterable[Batch]) -> None:
        """Aᵀ (K, d) with row k = ω_k ∇log π_θ₀ of slot k (its first occurrence), and Γ."""
        size = self.num_slots
        jacobian_t = torch.zeros(size, self.products.dim, dtype=self.dtype, device=self.device)
        seen_rows = torch.zeros(self.num_examples, dtype=torch.bool)
        seen = torch.zeros(size, dtype=torch.bool)
        for batch in batches:
            index = self._batch_index(batch)
            first_occurrences(index.cpu(), seen_rows)
            slots = occurrence_slots(self.slots, index)
            keep = first_occurrences(slots.cpu(), seen).to(self.device)
            if bool(keep.any()):
                rows = self.products.jacobian(batch).to(self.dtype)             # (2B, d)
                jacobian_t[slots[keep]] = rows[keep]
        if not bool(seen_rows.all()):
            missing = torch.nonzero(~seen_rows).flatten()
            raise ValueError(f"projection: {missing.numel()} dataset rows are missing from "
                             f"the batches given to prepare() (first: {int(missing[0])})")
        if not self._unit_weights:
            jacobian_t *= self.weights[:, None]
        basis, rank = null_space_basis(jacobian_t)
        broadcast_(basis)                        # every process: rank 0's Γ, bit for bit
        if rank >= size:
            warnings.warn(
                f"projection: K = {size} offsets ≤ rank(A) = {rank}, so N(A) = {{0}}: δ "
                "is forced to 0 and AuxDPO reduces to DPO. Use more data, fewer trainable "
                "parameters, or mode='global'.", RuntimeWarning, stacklevel=3)
        self.jacobian_t, self.basis, self.rank = jacobian_t, basis, rank
        self.column_scale = exact_column_scale(jacobian_t)
        self._reset_coef(basis.shape[1])

    def _reset_coef(self, size: int) -> None:
        self.coef = torch.zeros(1, size, dtype=self.dtype, device=self.device,
                                requires_grad=True)
        self.optimizer = self._optimizer_class((1, size), **self._optimizer_args)

    def _step_projection(self, occurrences: list[torch.Tensor], global_batch_size: int,
                         local_weight: float = 1.0) -> dict[str, float]:
        """Steps c on the global batch's mean gradient: this process's DPO part weighted
        G_r/G, plus Γᵀ of its occurrences' prior gradient (already scaled 1/G), summed over
        processes."""
        metrics = {"aux/penalty": 0.0, "aux/null_dim": float(self.basis.shape[1])}
        grad = self.coef.grad if self.coef.grad is not None else torch.zeros_like(self.coef)
        grad = grad * local_weight
        if self.prior_precision:                             # ∂/∂c = Γᵀ ∂/∂δ, δ = Γc
            prior_grad = torch.zeros(self.num_slots, dtype=self.dtype, device=self.device)
            metrics["aux/prior"] = self._add_prior_grad(self.values(), occurrences,
                                                        global_batch_size, prior_grad)
            grad = grad + (self.basis.T @ prior_grad).view(1, -1)
        grad = all_reduce_(grad)                             # the global batch's mean
        if self.coef.numel():
            self.optimizer.update(self.coef, torch.zeros(1, dtype=torch.long,
                                                         device=self.device), grad)
        self.coef.grad = None
        if self.jacobian_t is not None:                      # ‖Aδ‖/(ā‖δ‖), ā exact
            delta = self.values()
            metrics["aux/null_residual"] = scaled_residual(
                (self.jacobian_t.T @ delta).norm(), delta.norm(), self.column_scale)
        return metrics
