"""Per-micro-batch helpers of :class:`auxdpo.offsets.AuxOffsets` (kept apart so that the
offsets' module stays readable): the micro-batch's products, and the slots of its responses."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from auxdpo.offsets.products import Linearization, ReferenceProducts

__all__ = ["BatchProducts", "occurrence_slots", "ratio"]

Batch = Mapping[str, torch.Tensor]


def occurrence_slots(slots: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(2B,)``: the δ slot of each response of a batch of rows ``index`` ``(B,)``, in the
    batch's row order (B chosen, then B rejected), from the ``(n, 2)`` slot map."""
    rows = slots[index]
    return torch.cat([rows[:, 0], rows[:, 1]])


class BatchProducts:
    """A micro-batch's products for :meth:`AuxOffsets.step`: from its fused
    :class:`Linearization` when :meth:`AuxOffsets.reference_logps` made one, else fresh."""

    def __init__(self, products: ReferenceProducts, batch: Batch,
                 linear: Linearization | None) -> None:
        self.products, self.batch, self.linear = products, batch, linear

    def jvp_u(self, u: torch.Tensor) -> torch.Tensor:
        """A_Bᵀu for this step's u (the fused pass's tangent when there was one)."""
        if self.linear is not None and self.linear.directional is not None:
            return self.linear.directional
        return self.jvp(u)

    def jvp(self, tangent: torch.Tensor) -> torch.Tensor:
        tangent = tangent.to(self.products.dtype)
        if self.linear is not None:
            return self.linear.jvp(tangent)
        return self.products.jvp(self.batch, tangent)

    def vjp(self, cotangent: torch.Tensor) -> torch.Tensor:
        if self.linear is not None:
            return self.linear.vjp(cotangent)
        return self.products.vjp(self.batch, cotangent)

    def release(self) -> None:
        if self.linear is not None:
            self.linear.release()


def ratio(numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> float:
    denominator = float(denominator)
    return float(numerator) / denominator if denominator > 0 else 0.0

