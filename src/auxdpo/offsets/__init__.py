"""AuxDPO's auxiliary offsets δ and the machinery behind them (docs/offsets.md).

:class:`AuxOffsets` (``from auxdpo.offsets import AuxOffsets``) is what a trainer holds. It is
composed, not mixed: it owns the slot map, ω and the lifecycle, and holds one constraint
object for its mode, the prior, the metric scales and the fused pass's queue, each owning its
own state. The modules, from the trainer's side down:

``store``        :class:`AuxOffsets`: slots, ω, lifecycle (prepare, accumulate, step), state.
``global_mode``  ``GlobalConstraint``: the paper's global penalty, exact with u = A·δ (owns u).
``batch_mode``   ``BatchConstraint``: the batchwise relaxation's penalty (no state of its own).
``projection``   ``ProjectionConstraint``: δ = Γc over a basis Γ of N(A) (owns Aᵀ, Γ, c).
``rows``         ``RowOffsets``: δ's raw parameter, cap and lazy row-wise optimizer
                 (global/batch), and the row update; ``RowAdam``, ``RowSGD``.
``constraints``  mode names, config and memory checks, what a step hands the constraint.
``prior``        ``OffsetPrior``: the Gaussian prior (τ/2n)Σδ², as exact per-row shares.
``health``       ``ColumnScales``: ``aux/null_residual`` without A's units (ā, ā_B).
``keys``         which slot each row and side uses; ``SlotWeights``, the constraint's ω.
``micro_batch``  a batch's rows and slots, its products for the step, ``LinearizationQueue``.
``products``     ``ReferenceProducts``: products with the reference Jacobian A_B (VJP, JVP,
                 Jacobian, fused linearization), composed of the two below.
``reference``    ``ReferenceFunction``: log π at θ₀, through the whole model or the tail.
``jvp``          the exact JVP strategies (forward mode, double VJP) and the method → object map.
``differences``  ``DifferenceJVP``: the difference-quotient JVPs and their step-size control.
``tail``         the trainable tail of GPT-2/Llama/Qwen-shaped models.
``collectives``  δ's and u's all-reduces, sharding-engine detection, cost estimates.

The null-space basis of the projection mode is :func:`auxdpo.geometry.null_space`.
Importing this package is cheap: :class:`AuxOffsets` and :data:`MODES` load on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["MODES", "AuxOffsets"]

_HOMES = {"AuxOffsets": "auxdpo.offsets.store", "MODES": "auxdpo.offsets.constraints"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
