"""What AuxDPO's constraint modes share: the mode names and the checks of an
:class:`auxdpo.offsets.AuxOffsets` configuration, the memory check that guards the exact
``projection`` mode, :func:`first_occurrences` (count every row once over several batches),
and :class:`StepInputs`, what :meth:`AuxOffsets.step` hands the mode's constraint object.

The constraint objects themselves, one per mode, have the same small interface:
``prepare(batches)``, ``step(inputs) -> metrics``, ``values()``, ``rows(slots)``,
``state_dict()``/``load_state_dict(state)``, ``tangent()`` and ``version`` (the fused pass's
tangent), ``after_step(num_steps, batches)``, ``null_image()``; they are
:class:`auxdpo.offsets.global_mode.GlobalConstraint`,
:class:`auxdpo.offsets.batch_mode.BatchConstraint` and
:class:`auxdpo.offsets.projection.ProjectionConstraint`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from auxdpo.offsets.keys import NULL_WEIGHTS
from auxdpo.offsets.micro_batch import BatchProducts
from auxdpo.offsets.prior import OffsetPrior

__all__ = ["MODES", "StepInputs", "check_projection_memory", "first_occurrences",
           "validate_offsets_config"]

MODES = ("global", "batch", "projection")


@dataclass
class StepInputs:
    """One optimizer step's micro-batches, as the constraint objects see them.

    ``products``: each micro-batch's products; ``occurrences``: each one's ``(2B,)`` slots
    (chosen, then rejected); ``global_batch_size``: G, summed over processes;
    ``local_weight``: this process's share G_r/G of the mean loss; ``prior``: the prior, whose
    gradient joins the penalty's."""

    products: list[BatchProducts]
    occurrences: list[torch.Tensor]
    global_batch_size: int
    local_weight: float
    prior: OffsetPrior


def check_projection_memory(dim: int, num_examples: int, dtype: torch.dtype,
                            budget_bytes: int) -> int:
    """Bytes of A (d × 2n) in ``dtype``; ValueError naming the alternatives if over budget."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    needed = dim * 2 * num_examples * itemsize
    if needed > budget_bytes:
        raise ValueError(
            f"mode='projection' needs the explicit reference Jacobian A of {dim} trainable "
            f"parameters × {2 * num_examples} responses = {needed / 2**30:.2f} GiB, over the "
            f"memory budget of {budget_bytes / 2**30:.2f} GiB. Use mode='global' (exact "
            "dataset-wide penalty, O(d) memory) or mode='batch' (batchwise relaxation), train "
            "fewer parameters (LoRA, last block), or raise memory_budget_bytes.")
    return needed


def first_occurrences(index: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: position k holds a row not in ``seen`` and not earlier in ``index``.

    Marks the rows it selects in ``seen`` (``(n,)`` bool, modified in place), so that a
    quantity summed over several batches counts every dataset row once.
    """
    keep = torch.zeros(index.shape[0], dtype=torch.bool, device=index.device)
    for position, row in enumerate(index.tolist()):
        if not seen[row]:
            seen[row] = True
            keep[position] = True
    return keep


def validate_offsets_config(num_examples, mode, lambda_null, lambda_amp, amp_sign, delta_cap,
                            recompute_every, keys=None, null_weights="multiplicity") -> None:
    """ValueError naming the field for a bad :class:`auxdpo.offsets.AuxOffsets` setting
    (``keys``: its :class:`~auxdpo.offsets.keys.OffsetKeys`, if given); a warning for an
    unbounded batch objective."""
    if not (isinstance(num_examples, int) and num_examples > 0):
        raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if lambda_null < 0 or lambda_amp < 0:
        raise ValueError(f"lambda_null and lambda_amp must be >= 0, got {lambda_null}, "
                         f"{lambda_amp} (the amplitude term's sign is amp_sign)")
    if amp_sign not in (1, -1):
        raise ValueError(f"amp_sign must be +1 or -1, got {amp_sign!r}")
    if lambda_amp and mode != "batch":
        raise ValueError(f"lambda_amp is the batch mode's amplitude term; mode={mode!r} "
                         "takes lambda_amp=0")
    if delta_cap is not None and (delta_cap <= 0 or mode == "projection"):
        raise ValueError(f"delta_cap must be > 0 and is not available in projection mode "
                         f"(cap·tanh would leave N(A)); got {delta_cap!r} with mode={mode!r}")
    if not (isinstance(recompute_every, int) and recompute_every >= 0):
        raise ValueError(f"recompute_every must be an int >= 0, got {recompute_every!r}")
    if keys is not None and keys.num_examples != num_examples:
        raise ValueError(f"keys cover {keys.num_examples} rows, expected {num_examples}")
    if null_weights not in NULL_WEIGHTS:
        raise ValueError(f"null_weights must be one of {NULL_WEIGHTS}, got {null_weights!r}")
    if null_weights != "multiplicity" and keys is not None and keys.prompts is None:
        raise ValueError(f"null_weights={null_weights!r} needs keys with each slot's prompt")
    if mode == "batch" and amp_sign < 0 and lambda_amp > 0 and delta_cap is None:
        warnings.warn("amp_sign=-1 rewards ‖δ_B‖² without bound along the null space of "
                      "A_B; set delta_cap to keep δ finite", RuntimeWarning, stacklevel=3)
