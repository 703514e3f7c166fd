"""A_Bᵀt by a difference quotient of the reference log-probs (``jvp_method`` finite-difference
or central-difference), and its step-size control (:class:`DifferenceJVPMixin`).

One extra plain forward at θ₀ + s·t (one-sided; relative error ≈ √eps) or two (central); the
step s follows ‖A_Bᵀt‖/‖t‖ of the previous call, state that checkpoints keep
(:attr:`DifferenceJVPMixin.difference_gain`). The constants are measured by
benchmarks/jvp_accuracy.py (docs/offsets.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from auxdpo.offsets.reference import check_vector

__all__ = ["DIFFERENCES", "DIFFERENCE_METHODS", "DifferenceJVPMixin"]

# τ = c·eps^(1/2 or 1/3); c from benchmarks/jvp_accuracy.py (docs/offsets.md)
DIFFERENCES = {"finite-difference": 0.5, "central-difference": 0.1}
DIFFERENCE_METHODS = tuple(DIFFERENCES)


class DifferenceJVPMixin:
    """The difference JVP of :class:`auxdpo.offsets.products.ReferenceProducts`."""

    @property
    def difference_gain(self) -> float | None:
        """The difference JVP's step-size state (last ‖A_Bᵀt‖/‖t‖; None before the first
        call). Saved in checkpoints so that a resumed run takes the same steps."""
        return self._fd_gain

    @difference_gain.setter
    def difference_gain(self, value: float | None) -> None:
        self._fd_gain = None if value is None else float(value)

    def _difference(self, fn: Callable, tangent: torch.Tensor, logps: torch.Tensor
                    ) -> torch.Tensor:
        """A_Bᵀt by a difference quotient of ``fn`` around θ₀, whose values ``logps`` are given.

        The step s is set so that the predicted relative change of the log-probs,
        ‖s·A_Bᵀt‖/‖log π‖, is τ = 0.5·√eps (one-sided) or 0.1·eps^(1/3) (central): the
        balance of truncation and round-off, measured on GPT-2 tails (docs/offsets.md). It
        needs ‖A_Bᵀt‖/‖t‖, taken from the previous call (a pilot quotient on the first)."""
        check_vector("tangent", tangent, self.dim)
        logps = logps.detach()
        norm_t = float(tangent.norm())
        if norm_t == 0.0:
            return torch.zeros_like(logps)
        central = self.jvp_method == "central-difference"
        eps = torch.finfo(logps.dtype).eps
        tau = DIFFERENCES[self.jvp_method] * eps ** (1 / 3 if central else 1 / 2)
        scale = max(float(logps.norm()), 1.0)
        theta = tuple(self.reference.values())
        tangents = self._tangents(tangent, theta)

        def quotient(step: float) -> torch.Tensor:
            with torch.no_grad(), self._context(math_attention=False):
                plus = fn(*[p + step * t for p, t in zip(theta, tangents)])
                if not central:
                    return (plus - logps) / step
                minus = fn(*[p - step * t for p, t in zip(theta, tangents)])
                return (plus - minus) / (2 * step)

        gain = self._fd_gain
        if gain is None:                      # pilot: step of relative size √eps in θ
            size = max(float(torch.sqrt(sum((p.double() ** 2).sum() for p in theta))), 1.0)
            pilot = quotient(eps ** 0.5 * size / norm_t)
            gain = float(pilot.norm()) / norm_t
            if not (math.isfinite(gain) and gain > 0):
                return pilot if bool(torch.isfinite(pilot).all()) else torch.zeros_like(logps)
        directional = quotient(tau * scale / (gain * norm_t))
        new_gain = float(directional.norm()) / norm_t
        if math.isfinite(new_gain) and new_gain > 0:
            self._fd_gain = new_gain
        return directional

