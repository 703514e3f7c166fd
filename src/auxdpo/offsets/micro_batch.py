"""Per-micro-batch helpers of :class:`auxdpo.offsets.AuxOffsets` (kept apart so that the
offsets' module stays readable): the micro-batch's products, the fused reference pass that
files them for the step (:class:`FusedPassMixin`), and the slots of its responses."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from auxdpo.offsets.products import Linearization, ReferenceProducts

__all__ = ["BatchProducts", "FusedPassMixin", "occurrence_slots"]

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


class FusedPassMixin:
    """The fused reference pass of :class:`auxdpo.offsets.AuxOffsets`: each micro-batch's
    :class:`Linearization`, filed under its rows until :meth:`AuxOffsets.step` takes it."""

    def reference_logps(self, batch: Batch, captured=None) -> torch.Tensor:
        """``(2B,)`` reference log-probs log π_θ₀ of a training micro-batch, from the products.

        Fused path for a trainer whose loss needs the reference log-probs anyway: in global
        mode the same pass carries the tangent u and gives A_Bᵀu (u is fixed until
        :meth:`step`); the batch's prefix pass (truncated products) or graph
        (``keep_reference_graph``) is kept, so :meth:`step` uses them for this micro-batch
        instead of new passes. Call it before :meth:`accumulate` for the same batch.
        ``captured``: the tail's inputs recorded from the policy's forward on this batch
        (:meth:`auxdpo.offsets.tail.TailPlan.recording`); the frozen prefix then does not run again.
        """
        index = self._batch_index(batch)
        tangent = None
        if self.mode == "global" and torch.any(self.u != 0):
            tangent = self.u.to(self.products.dtype)
        keep = self.keep_reference_graph and self.mode != "projection"
        linear = self.products.linearize(batch, tangent, keep_graph=keep, captured=captured)
        if self.mode != "projection":
            key = tuple(index.tolist())
            self._linearized.setdefault(key, []).append((self._u_version, linear))
        return linear.logps

    def _take_linearization(self, index: torch.Tensor) -> Linearization | None:
        queue = self._linearized.get(tuple(index.tolist()))
        if not queue:
            return None
        version, linear = queue.pop(0)
        return linear if version == self._u_version else None
