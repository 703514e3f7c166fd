"""Per-micro-batch helpers of :class:`auxdpo.offsets.AuxOffsets`: a batch's rows
(:func:`batch_index`) and the slots of its responses (:func:`occurrence_slots`), its products
for the step (:class:`BatchProducts`), and the queue in which the fused reference pass files
them until the step (:class:`LinearizationQueue`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from auxdpo.offsets.products import Linearization, ReferenceProducts

__all__ = ["Batch", "BatchProducts", "LinearizationQueue", "batch_index", "check_index",
           "occurrence_slots"]

Batch = Mapping[str, torch.Tensor]


def check_index(index: torch.Tensor, num_examples: int,
                device: torch.device | str) -> torch.Tensor:
    """``index`` as a flat long tensor on ``device``; ValueError if out of ``[0, n)``."""
    index = torch.as_tensor(index, device=device).long().reshape(-1)
    if index.numel() and (index.min() < 0 or index.max() >= num_examples):
        raise ValueError(f"aux_index out of range [0, {num_examples}): "
                         f"min {int(index.min())}, max {int(index.max())}")
    return index


def batch_index(batch: Batch, num_examples: int, device: torch.device | str) -> torch.Tensor:
    """``(B,)`` the dataset rows of a preference batch (its ``aux_index``, checked against
    its 2B rows and the dataset size n)."""
    if "aux_index" not in batch:
        raise ValueError("batch has no 'aux_index' (the dataset row of each example)")
    index = check_index(batch["aux_index"], num_examples, device)
    rows = batch["input_ids"].shape[0]
    if rows != 2 * index.shape[0]:
        raise ValueError(f"batch has {rows} rows but aux_index has {index.shape[0]} "
                         "entries; expected 2B rows (B chosen, then B rejected)")
    return index


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


class LinearizationQueue:
    """The fused reference pass's products, filed per micro-batch until
    :meth:`AuxOffsets.step` takes them: each micro-batch's :class:`Linearization` under its
    rows, in order, with the version of the tangent it carries (a global mode's u version; a
    linearization whose tangent went stale is not used)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[int, ...], list[tuple[int, Linearization]]] = {}

    def __len__(self) -> int:
        """The number of linearizations filed and not yet taken."""
        return sum(len(queue) for queue in self._queues.values())

    def file(self, index: torch.Tensor, linear: Linearization, version: int) -> None:
        """File ``linear``, made for rows ``index`` with tangent version ``version``."""
        self._queues.setdefault(tuple(index.tolist()), []).append((version, linear))

    def take(self, index: torch.Tensor, version: int) -> Linearization | None:
        """The oldest linearization filed for rows ``index`` (removed), if its tangent's
        version is ``version``; else None."""
        queue = self._queues.get(tuple(index.tolist()))
        if not queue:
            return None
        filed, linear = queue.pop(0)
        return linear if filed == version else None

    def clear(self) -> None:
        self._queues = {}
