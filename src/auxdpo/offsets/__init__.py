"""AuxDPO's auxiliary offsets δ and the machinery behind them (docs/offsets.md).

:class:`AuxOffsets` (``from auxdpo.offsets import AuxOffsets``) is what a trainer holds. The
modules, from the trainer's side down:

``store``        :class:`AuxOffsets`: δ over slots, its lifecycle (prepare, accumulate, step)
                 and the row update shared by the global and batch modes.
``global_mode``  the paper's global penalty, kept exact with u = A·δ.
``batch_mode``   the batchwise relaxation's penalty.
``projection``   δ = Γc over an orthonormal basis Γ of N(A).
``prior``        the Gaussian prior (τ/2n)Σδ² on the offsets, as exact per-row shares.
``health``       ``aux/null_residual`` without A's units (A's columns' root mean square).
``state``        checkpoint state (and reading states saved before slot keying).
``keys``         which slot each row and side uses; the constraint's slot weights ω.
``micro_batch``  one micro-batch's products, the fused reference pass, its responses' slots.
``constraints``  lazy row-wise optimizers, the null-space basis, memory and config checks.
``products``     products with the reference Jacobian A_B (VJP, JVP, fused linearization).
``reference``    the function the products differentiate: log π at θ₀, through the tail.
``differences``  the difference-quotient JVPs and their step-size control.
``tail``         the trainable tail of GPT-2/Llama/Qwen-shaped models.
``collectives``  δ's and u's all-reduces, sharding-engine detection, cost estimates.

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
