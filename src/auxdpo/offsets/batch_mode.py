"""AuxOffsets' ``batch`` mode (paper Sec. 7.2): the batchwise relaxation, normalised like the
mean DPO loss over the global batch G: λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G)
(:class:`BatchModeMixin`)."""

from __future__ import annotations

import torch

from auxdpo.offsets.collectives import all_reduce_, is_distributed
from auxdpo.offsets.health import scaled_residual

__all__ = ["BatchModeMixin"]


class BatchModeMixin:
    """The batch penalty and its gradient, for :class:`auxdpo.offsets.AuxOffsets`."""

    def _batch_penalty_grad(self, products, occurrences, global_batch_size, delta,
                            penalty_grad) -> dict[str, float]:
        """λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G) and its gradient (Sec. 7.2);
        A_Bδ_B = Σ_occurrences f δ g."""
        responses = 2 * global_batch_size
        values = [delta[slots] for slots in occurrences]
        null_image = sum(b.vjp(self._per_occurrence(v, s)).to(self.dtype)      # A_B·δ_B
                         for b, v, s in zip(products, values, occurrences))
        squares = sum(v.pow(2).sum() for v in values).reshape(1)
        if is_distributed():                     # the global batch's A_B·δ_B and ‖δ_B‖²
            packed = all_reduce_(torch.cat([null_image, squares.to(null_image.dtype)]))
            null_image, squares = packed[:-1], packed[-1:]
        squares = float(squares)
        penalty = (self.lambda_null * float(null_image.pow(2).sum()) / responses**2
                   + self.amp_sign * self.lambda_amp * squares / responses)
        null_scale = 2 * self.lambda_null / responses**2
        amp_scale = 2 * self.amp_sign * self.lambda_amp / responses
        for batch, slots, value in zip(products, occurrences, values):
            grad = amp_scale * value
            if self.lambda_null and torch.any(null_image != 0):
                grad = grad + self._per_occurrence(
                    null_scale * batch.jvp(null_image).to(self.dtype), slots)
            penalty_grad.index_add_(0, slots, grad)
        return {"aux/penalty": penalty,        # ‖A_Bδ_B‖/(ā_B‖δ_B‖), auxdpo.offsets.health
                "aux/null_residual": scaled_residual(null_image.norm(), squares ** 0.5,
                                                     self.occurrence_scale)}
