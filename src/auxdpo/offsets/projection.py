"""AuxOffsets' ``projection`` mode (paper Sec. 7.2): δ = Γc with Γ an orthonormal basis of
N(A), A = [ω_k ∇log π_θ₀(a_k|s_k)]_k over the slots, computed once
(:class:`ProjectionConstraint`, which owns Aᵀ, Γ, c and c's optimizer). Γ comes from
:func:`auxdpo.geometry.null_space`, the library's one null-space implementation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch

from auxdpo.geometry import null_space
from auxdpo.offsets.collectives import all_reduce_, broadcast_
from auxdpo.offsets.constraints import StepInputs, first_occurrences
from auxdpo.offsets.health import ColumnScales, scaled_residual
from auxdpo.offsets.keys import SlotWeights
from auxdpo.offsets.micro_batch import Batch, batch_index, occurrence_slots
from auxdpo.offsets.products import ReferenceProducts

__all__ = ["ProjectionConstraint"]


class ProjectionConstraint:
    """δ = Γc: Aᵀ ``jacobian_t`` ``(K, d)`` and Γ ``basis`` ``(K, K − rank)`` built by
    :meth:`prepare`, the coefficients ``coef`` ``(1, K − rank)`` (requires grad) and their
    optimizer (``make_optimizer``, :func:`auxdpo.offsets.rows.row_optimizer`). ā is exact
    (set on ``health`` from Aᵀ)."""

    mode = "projection"
    fuses = False             # no tangent, no later product: the fused pass is not kept
    exact_scale = True
    version = 0

    def __init__(self, products: ReferenceProducts, slots: torch.Tensor, weights: SlotWeights,
                 health: ColumnScales, make_optimizer: Callable, num_slots: int,
                 dtype: torch.dtype) -> None:
        self.products, self.slots, self.weights, self.health = products, slots, weights, health
        self.make_optimizer, self.num_slots, self.dtype = make_optimizer, num_slots, dtype
        self.num_examples, self.device = slots.shape[0], slots.device
        self.jacobian_t: torch.Tensor | None = None       # Aᵀ, (K, d), set by prepare
        self.rank: int | None = None
        self.basis = torch.zeros(num_slots, 0, dtype=dtype, device=self.device)
        self._reset_coef(0)

    # ---- the common interface -----------------------------------------------------------

    @property
    def parameter(self) -> torch.Tensor:
        return self.coef

    def values(self) -> torch.Tensor:
        with torch.no_grad():
            return self.basis @ self.coef[0]

    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        return self.basis[slots] @ self.coef[0]                          # δ = Γc

    def tangent(self) -> None:
        return None

    def prepare(self, batches: Iterable[Batch]) -> None:
        """Aᵀ (K, d) with row k = ω_k ∇log π_θ₀ of slot k (its first occurrence), Γ, and ā,
        exactly."""
        size = self.num_slots
        jacobian_t = torch.zeros(size, self.products.dim, dtype=self.dtype, device=self.device)
        seen_rows = torch.zeros(self.num_examples, dtype=torch.bool)
        seen = torch.zeros(size, dtype=torch.bool)
        for batch in batches:
            index = batch_index(batch, self.num_examples, self.device)
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
        if not self.weights.unit:
            jacobian_t *= self.weights.weights[:, None]
        basis, rank = null_space(jacobian_t.T)                 # N(A), A = jacobian_tᵀ (d, K)
        broadcast_(basis)                        # every process: rank 0's Γ, bit for bit
        if rank >= size:
            warnings.warn(
                f"projection: K = {size} offsets ≤ rank(A) = {rank}, so N(A) = {{0}}: δ "
                "is forced to 0 and AuxDPO reduces to DPO. Use more data, fewer trainable "
                "parameters, or mode='global'.", RuntimeWarning, stacklevel=3)
        self.jacobian_t, self.basis, self.rank = jacobian_t, basis, rank
        self.health.set_exact(jacobian_t)
        self._reset_coef(basis.shape[1])

    def step(self, inputs: StepInputs) -> dict[str, float]:
        """Steps c on the global batch's mean gradient: this process's DPO part weighted
        G_r/G, plus Γᵀ of its occurrences' prior gradient (already scaled 1/G), summed over
        processes. Returns ``aux/penalty`` (0), ``aux/null_dim``, ``aux/null_residual``
        (and ``aux/prior``)."""
        metrics = {"aux/penalty": 0.0, "aux/null_dim": float(self.basis.shape[1])}
        grad = self.coef.grad if self.coef.grad is not None else torch.zeros_like(self.coef)
        grad = grad * inputs.local_weight
        if inputs.prior.active:                              # ∂/∂c = Γᵀ ∂/∂δ, δ = Γc
            prior_grad = torch.zeros(self.num_slots, dtype=self.dtype, device=self.device)
            metrics["aux/prior"] = inputs.prior.add_grad(
                self.values(), inputs.occurrences, inputs.global_batch_size, prior_grad)
            grad = grad + (self.basis.T @ prior_grad).view(1, -1)
        grad = all_reduce_(grad)                             # the global batch's mean
        if self.coef.numel():
            self.optimizer.update(self.coef, torch.zeros(1, dtype=torch.long,
                                                         device=self.device), grad)
        self.coef.grad = None
        if self.jacobian_t is not None:                      # ‖Aδ‖/(ā‖δ‖), ā exact
            delta = self.values()
            metrics["aux/null_residual"] = scaled_residual(
                (self.jacobian_t.T @ delta).norm(), delta.norm(), self.health.column_scale)
        return metrics

    def after_step(self, num_steps: int, batches: Iterable[Batch] | None) -> None:
        """Nothing to refresh."""

    def null_image(self) -> None:
        """None: the residual is the step's own (``aux/null_residual`` of :meth:`step`)."""
        return None

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "coef": self.coef.detach().clone(),
                "basis": self.basis.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.basis = state["basis"].to(self.device, self.dtype).clone()
        self._reset_coef(self.basis.shape[1])
        with torch.no_grad():
            self.coef.copy_(state["coef"])
        self.optimizer.load_state_dict(state["optimizer"])

    def _reset_coef(self, size: int) -> None:
        self.coef = torch.zeros(1, size, dtype=self.dtype, device=self.device,
                                requires_grad=True)
        self.optimizer = self.make_optimizer((1, size))
