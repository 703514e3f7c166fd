"""A_Bᵀt by a difference quotient of the reference log-probs (``jvp_method`` finite-difference
or central-difference), and its step-size control (:class:`DifferenceJVP`).

One extra plain forward at θ₀ + s·t (one-sided; relative error ≈ √eps) or two (central); the
step s follows ‖A_Bᵀt‖/‖t‖ of the previous call, state that checkpoints keep
(:attr:`DifferenceJVP.gain`, :attr:`ReferenceProducts.difference_gain`). The constants are
measured by benchmarks/jvp_accuracy.py (docs/offsets.md).

:class:`DifferenceJVP` is one of the JVP strategies of
:class:`auxdpo.offsets.products.ReferenceProducts` (the exact ones are in
:mod:`auxdpo.offsets.jvp`); it has the same interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from auxdpo.offsets.reference import ReferenceFunction, check_vector

__all__ = ["DIFFERENCE_METHODS", "DIFFERENCE_SCALES", "DifferenceJVP"]

# τ = c·eps^(1/2 or 1/3); c from benchmarks/jvp_accuracy.py (docs/offsets.md), read per call
DIFFERENCE_SCALES = {"finite-difference": 0.5, "central-difference": 0.1}
DIFFERENCE_METHODS = tuple(DIFFERENCE_SCALES)


class DifferenceJVP:
    """A_Bᵀt = (log π(θ₀ + s·t) − log π(θ₀))/s (or the central quotient) for ``method`` in
    :data:`DIFFERENCE_METHODS`; every pass runs the default (fused) attention kernels, since a
    difference quotient must see the same kernels at both points."""

    math_attention = False       # the primal pass's kernels: the default ones
    reuses_primal = True         # :meth:`jvp_at` takes the log-probs at θ₀ as its base point

    def __init__(self, function: ReferenceFunction, method: str) -> None:
        if method not in DIFFERENCE_SCALES:
            raise ValueError(f"unknown difference method {method!r}; one of "
                             f"{DIFFERENCE_METHODS}")
        if torch.finfo(function.dtype).bits < 32:
            raise ValueError(f"jvp_method {method!r} needs float32 or float64 parameters "
                             f"(got {function.dtype}): a difference quotient in 16-bit "
                             "arithmetic has no correct digits; use jvp_method='forward'")
        self.function, self.method = function, method
        self.gain: float | None = None      # last ‖A_Bᵀt‖/‖t‖ seen (None before the first)

    def logps_and_jvp(self, fn: Callable, tangent: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π_θ₀, A_Bᵀt)`` of the prepared function ``fn``: a plain forward, then the
        quotient around it."""
        with torch.no_grad(), self.function.context(math_attention=False):
            logps = fn(*self.function.reference.values())
        return logps, self.jvp_at(fn, tangent, logps)

    def linearize_graph(self, fn: Callable, leaves: list[torch.Tensor],
                        tangent: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(log-probs with their graph to leaves, A_Bᵀt or None)``: the graph pass, then the
        quotient around its values."""
        with self.function.context(math_attention=False), torch.enable_grad():
            logps = fn(*leaves)
        directional = None if tangent is None else self.jvp_at(fn, tangent, logps.detach())
        return logps, directional

    def jvp_at(self, fn: Callable, tangent: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
        """A_Bᵀt by a difference quotient of ``fn`` around θ₀, whose values ``logps`` are given.

        The step s is set so that the predicted relative change of the log-probs,
        ‖s·A_Bᵀt‖/‖log π‖, is τ = 0.5·√eps (one-sided) or 0.1·eps^(1/3) (central): the
        balance of truncation and round-off, measured on GPT-2 tails (docs/offsets.md). It
        needs ‖A_Bᵀt‖/‖t‖, taken from the previous call (a pilot quotient on the first)."""
        function = self.function
        check_vector("tangent", tangent, function.dim)
        logps = logps.detach()
        norm_t = float(tangent.norm())
        if norm_t == 0.0:
            return torch.zeros_like(logps)
        central = self.method == "central-difference"
        eps = torch.finfo(logps.dtype).eps
        tau = DIFFERENCE_SCALES[self.method] * eps ** (1 / 3 if central else 1 / 2)
        scale = max(float(logps.norm()), 1.0)
        theta = tuple(function.reference.values())
        tangents = function.tangents(tangent, theta)

        def quotient(step: float) -> torch.Tensor:
            with torch.no_grad(), function.context(math_attention=False):
                plus = fn(*[p + step * t for p, t in zip(theta, tangents)])
                if not central:
                    return (plus - logps) / step
                minus = fn(*[p - step * t for p, t in zip(theta, tangents)])
                return (plus - minus) / (2 * step)

        gain = self.gain
        if gain is None:                      # pilot: step of relative size √eps in θ
            size = max(float(torch.sqrt(sum((p.double() ** 2).sum() for p in theta))), 1.0)
            pilot = quotient(eps ** 0.5 * size / norm_t)
            gain = float(pilot.norm()) / norm_t
            if not (math.isfinite(gain) and gain > 0):
                return pilot if bool(torch.isfinite(pilot).all()) else torch.zeros_like(logps)
        directional = quotient(tau * scale / (gain * norm_t))
        new_gain = float(directional.norm()) / norm_t
        if math.isfinite(new_gain) and new_gain > 0:
            self.gain = new_gain
        return directional
