"""Second-order minimisers used by the lab's solvers (float64, exact derivatives by autograd).

* :func:`newton_minimize`: one problem in d variables. Exact Hessian; a clearly positive
  definite one is solved by Cholesky, any other is eigen-decomposed and the step uses |λ|
  (so it is Newton on convex problems and still a descent step on non-convex ones) and drops eigenvalues under ``eig_rtol``·max|λ| (a pseudo-inverse: on a convex loss
  with flat directions the iterates stay in x₀ + range(H), i.e. the minimiser closest to x₀).
  Armijo backtracking makes every accepted step decrease the objective.
* :func:`batched_newton`: G independent smooth convex problems in k variables at once
  (the sensitivity grid), one k×k solve per point in a single batched op.
* :func:`bracketed_newton`: G independent convex scalar problems, safeguarded by a bracket
  on the sign of the derivative, so it also converges on DPOP's kink (bisection fallback).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch

__all__ = ["NewtonResult", "batched_newton", "bracketed_newton", "newton_minimize"]


class NewtonResult(NamedTuple):
    x: torch.Tensor
    value: float
    grad_norm: float
    iterations: int
    status: str  # "converged" | "stalled" (no decrease possible, e.g. at a kink) | "max_iter"


class Objective(Protocol):
    """What :func:`newton_minimize` needs: a value and exact (value, gradient, Hessian)."""

    def value(self, x: torch.Tensor) -> torch.Tensor: ...

    def derivatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                     torch.Tensor]: ...


def _direction(grad, hess, eig_rtol):
    hess = 0.5 * (hess + hess.T)
    chol, info = torch.linalg.cholesky_ex(hess)
    pivots = chol.diagonal()
    if int(info) == 0 and float(pivots.min()) ** 2 > 1e-8 * float(pivots.max()) ** 2:
        # Clearly positive definite: the Newton step is unique, Cholesky is the cheap way.
        return -torch.cholesky_solve(grad[:, None], chol).squeeze(1)
    evals, evecs = torch.linalg.eigh(hess)
    size = evals.abs()
    keep = size > eig_rtol * size.max().clamp_min(torch.finfo(hess.dtype).tiny)
    inv = torch.where(keep, 1.0 / torch.where(keep, size, torch.ones_like(size)), 0.0)
    step = -(evecs @ (inv * (evecs.T @ grad)))
    if not float(grad @ step) < 0:      # no usable curvature: fall back to steepest descent
        step = -grad
    return step


def newton_minimize(objective: Objective, x0: torch.Tensor, *, max_iter: int = 100,
                    xtol: float = 1e-11, eig_rtol: float = 1e-13, kink_tol: float = 1e-9,
                    patience: int = 2) -> NewtonResult:
    """Minimise ``objective`` over ``(d,)`` from ``x0``; see the module docstring.

    Stops "converged" when the Newton step is below ``xtol``·(1 + ‖x‖) or its predicted
    decrease is below float64 resolution of the value; "stalled" when no
    step decreases the value, or when ``patience`` accepted steps in a row are cut by the
    line search and move x by less than ``kink_tol``·(1 + ‖x‖): what Newton does next to a
    kink (DPOP's hinge), where the full step keeps jumping across it.
    """
    x = x0.detach().clone()
    value, grad, hess = objective.derivatives(x)
    status, it, slow = "max_iter", 0, 0
    for it in range(1, max_iter + 1):
        step = _direction(grad, hess, eig_rtol)
        slope = float(grad @ step)
        # Converged: a tiny step, or a predicted decrease (half the Newton decrement²) under
        # the resolution of float64 values, so that no line search could measure progress.
        small = (float(step.norm()) <= xtol * (1.0 + float(x.norm()))
                 or -0.5 * slope <= 1e-15 * (1.0 + abs(float(value))))
        t, accepted = 1.0, False
        for _ in range(40):  # backtracking down to t ≈ 1e-21
            trial = x + t * step
            trial_value = objective.value(trial).detach()
            # Once converged, the last full Newton step is taken unless rounding says it
            # hurts: it brings the gradient from ~√ε to ~ε.
            noise = 1e-14 * (1.0 + abs(float(value)))
            if trial_value <= value + 1e-4 * t * slope or (small and trial_value <= value + noise):
                accepted = True
                break
            t *= 0.3
        if accepted:
            moved = t * float(step.norm()) <= kink_tol * (1.0 + float(x.norm()))
            slow = slow + 1 if (t < 1.0 and moved) else 0
            x = trial
            value, grad, hess = objective.derivatives(x)
        if small:
            status = "converged"
            break
        if not accepted or slow >= patience:
            status = "stalled"
            break
    return NewtonResult(x, float(value), float(grad.norm()), it, status)


def _batched_grad_hess(f, x):
    """Per-point gradient ``(G, k)`` and Hessian ``(G, k, k)`` of independent problems."""
    xg = x.detach().requires_grad_(True)
    values = f(xg)
    (grad,) = torch.autograd.grad(values.sum(), xg, create_graph=True)
    rows = [torch.autograd.grad(grad[:, j].sum(), xg, retain_graph=True)[0]
            for j in range(x.shape[1])]
    return values.detach(), grad.detach(), torch.stack(rows, dim=1).detach()


def batched_newton(f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *,
                   max_iter: int = 100, xtol: float = 1e-12) -> tuple[torch.Tensor, bool]:
    """Minimise G independent smooth convex problems; ``f``: ``(G, k)`` → ``(G,)`` values.

    A point stops when its Newton step is below ``xtol``·(1 + ‖x‖) or its predicted decrease
    is under float64 resolution. Returns the minimisers ``(G, k)`` and whether all stopped.
    """
    x = x0.detach().clone()
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    for _ in range(max_iter):
        values, grad, hess = _batched_grad_hess(f, x)
        scale = hess.diagonal(dim1=1, dim2=2).abs().amax(dim=1).clamp_min(1e-300)
        ridge = 1e-14 * scale[:, None, None] * eye      # guards exactly singular blocks only
        step = -torch.linalg.solve(hess + ridge, grad.unsqueeze(-1)).squeeze(-1)
        slope = (grad * step).sum(dim=1)
        active = ((step.norm(dim=1) > xtol * (1 + x.norm(dim=1)))
                  & (-0.5 * slope > 1e-15 * (1 + values.abs())))
        if not bool(active.any()):
            # Last full step (as in newton_minimize) unless rounding says it hurts.
            trial = x + step
            noise = 1e-14 * (1 + values.abs())
            keep = f(trial).detach() <= values + noise
            return torch.where(keep[:, None], trial, x), True
        t = torch.where(active, 1.0, 0.0).to(x.dtype)
        pending = active.clone()
        for _ in range(40):
            ok = f(x + t[:, None] * step).detach() <= values + 1e-4 * t * slope
            pending &= ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, 0.3 * t, t)
        x = x + torch.where(pending, 0.0, t)[:, None] * step
    return x, False


def _first_second(total, x):
    xg = x.detach().requires_grad_(True)
    (d1,) = torch.autograd.grad(total(xg), xg, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), xg)
    return d1.detach(), d2.detach()


def bracketed_newton(f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *,
                     width: float = 1.0, max_iter: int = 200, xtol: float = 1e-13
                     ) -> torch.Tensor:
    """Minimise G independent convex scalar functions; ``f``: ``(G,)`` → ``(G,)``.

    Keeps a bracket [lo, hi] with f'(lo) < 0 < f'(hi) (grown from x₀ ± ``width``), takes the
    Newton step when it lands inside the bracket and bisects otherwise; stops when the bracket
    (or the Newton step) is below ``xtol``·(1 + |x|) everywhere. A kink (DPOP) is handled by
    the bisection: the derivative's sign still brackets the minimiser.
    """
    total = lambda x: f(x).sum()  # noqa: E731 - points are independent
    lo, hi = x0 - width, x0 + width
    for _ in range(200):  # grow the bracket until the derivative changes sign
        d_lo, _ = _first_second(total, lo)
        d_hi, _ = _first_second(total, hi)
        if bool((d_lo < 0).all() and (d_hi > 0).all()):
            break
        lo = torch.where(d_lo < 0, lo, lo - 2 * (hi - lo))
        hi = torch.where(d_hi > 0, hi, hi + 2 * (hi - lo))
    x = x0.clone().clamp(lo, hi)
    for _ in range(max_iter):
        d1, d2 = _first_second(total, x)
        lo = torch.where(d1 < 0, x, lo)
        hi = torch.where(d1 > 0, x, hi)
        newton = x - d1 / torch.where(d2 > 0, d2, torch.ones_like(d2))
        inside = (d2 > 0) & (newton > lo) & (newton < hi)
        x_next = torch.where(d1 == 0, x, torch.where(inside, newton, 0.5 * (lo + hi)))
        tol = xtol * (1 + x.abs())
        if bool((((x_next - x).abs() <= tol) | ((hi - lo) <= tol)).all()):
            return x_next
        x = x_next
    return x
