"""AuxOffsets' ``batch`` mode (paper Sec. 7.2): the batchwise relaxation, normalised like the
mean DPO loss over the global batch G: λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G)
(:class:`BatchConstraint`; it keeps no state of its own beyond δ's parameter)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from auxdpo.offsets.collectives import all_reduce_, is_distributed
from auxdpo.offsets.constraints import StepInputs
from auxdpo.offsets.health import ColumnScales, scaled_residual
from auxdpo.offsets.keys import SlotWeights
from auxdpo.offsets.micro_batch import Batch
from auxdpo.offsets.rows import RowBacked, RowOffsets

__all__ = ["BatchConstraint"]


class BatchConstraint(RowBacked):
    """The batch penalty over δ = ``rows`` and its gradient; ``aux/null_residual`` is scaled
    by the probed ā_B of ``health``."""

    mode = "batch"
    fuses = True              # the fused reference pass is kept for the step's products
    exact_scale = False       # ā_B is probed (auxdpo.offsets.health)
    version = 0               # no tangent in the fused pass: never stale

    def __init__(self, rows: RowOffsets, weights: SlotWeights, health: ColumnScales, *,
                 lambda_null: float, lambda_amp: float, amp_sign: int,
                 dtype: torch.dtype) -> None:
        self.row_offsets, self.weights, self.health = rows, weights, health
        self.lambda_null, self.lambda_amp, self.amp_sign = lambda_null, lambda_amp, amp_sign
        self.dtype = dtype

    # ---- the common interface -----------------------------------------------------------

    def tangent(self) -> None:
        return None

    def prepare(self, batches: Iterable[Batch]) -> None:
        """Nothing to build."""

    def step(self, inputs: StepInputs) -> dict[str, float]:
        """The row update with the batch penalty's gradient; returns ``aux/penalty``,
        ``aux/null_residual`` (and ``aux/prior``)."""
        def penalty(delta: torch.Tensor, grad: torch.Tensor) -> dict[str, float]:
            return self._penalty_grad(inputs, delta, grad)

        return self.row_offsets.step(inputs, penalty)[0]

    def after_step(self, num_steps: int, batches: Iterable[Batch] | None) -> None:
        """Nothing to refresh."""

    def null_image(self) -> None:
        """None: the residual is the step's own (``aux/null_residual`` of :meth:`step`)."""
        return None

    def state_dict(self) -> dict:
        return self.row_offsets.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.row_offsets.load_state_dict(state)

    # ---- the penalty ---------------------------------------------------------------------

    def _penalty_grad(self, inputs: StepInputs, delta: torch.Tensor,
                      penalty_grad: torch.Tensor) -> dict[str, float]:
        """λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G) and its gradient (Sec. 7.2);
        A_Bδ_B = Σ_occurrences f δ g."""
        responses = 2 * inputs.global_batch_size
        per_occurrence = self.weights.per_occurrence
        values = [delta[slots] for slots in inputs.occurrences]
        null_image = sum(b.vjp(per_occurrence(v, s)).to(self.dtype)             # A_B·δ_B
                         for b, v, s in zip(inputs.products, values, inputs.occurrences))
        squares = sum(v.pow(2).sum() for v in values).reshape(1)
        if is_distributed():                     # the global batch's A_B·δ_B and ‖δ_B‖²
            packed = all_reduce_(torch.cat([null_image, squares.to(null_image.dtype)]))
            null_image, squares = packed[:-1], packed[-1:]
        squares = float(squares)
        penalty = (self.lambda_null * float(null_image.pow(2).sum()) / responses**2
                   + self.amp_sign * self.lambda_amp * squares / responses)
        null_scale = 2 * self.lambda_null / responses**2
        amp_scale = 2 * self.amp_sign * self.lambda_amp / responses
        for batch, slots, value in zip(inputs.products, inputs.occurrences, values):
            grad = amp_scale * value
            if self.lambda_null and torch.any(null_image != 0):
                grad = grad + per_occurrence(
                    null_scale * batch.jvp(null_image).to(self.dtype), slots)
            penalty_grad.index_add_(0, slots, grad)
        return {"aux/penalty": penalty,        # ‖A_Bδ_B‖/(ā_B‖δ_B‖), auxdpo.offsets.health
                "aux/null_residual": scaled_residual(null_image.norm(), squares ** 0.5,
                                                     self.health.occurrence_scale)}
