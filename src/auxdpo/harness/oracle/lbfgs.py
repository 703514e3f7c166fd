"""L-BFGS and its preconditioners: the numerics every oracle solve shares.

:func:`lbfgs` runs torch's L-BFGS (strong Wolfe line search) to :data:`GRAD_TOLERANCE` and says
whether it stopped at its iteration cap; :func:`lbfgs_rounds` chains rounds, re-centring and
re-preconditioning between them. The preconditioners: :func:`reward_metric` (the DPO-family
loss's curvature in the reward), :func:`theta_root` (the same in θ, through the score matrix)
and :func:`inverse_root`. A solve's answer is a :class:`Fit`. Used by
:mod:`auxdpo.harness.oracle.solvers` (population minimisers, exact RLHF) and
:mod:`auxdpo.harness.oracle.fullbatch` (row-keyed AuxDPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from auxdpo.harness.lab.problems import PreferenceProblem

__all__ = ["DTYPE", "GRAD_TOLERANCE", "Fit", "inverse_root", "lbfgs", "lbfgs_rounds",
           "reward_metric", "theta_root"]

DTYPE = torch.float64
GRAD_TOLERANCE = 1e-8          # L-BFGS stops once every gradient entry is this small


@dataclass
class Fit:
    """A solver's answer: θ ``(d,)``, the objective reached, iterations, final gradient norm;
    ``capped``: its last L-BFGS round stopped at the iteration cap (not converged)."""

    method: str
    theta: torch.Tensor
    objective: float
    iterations: int
    grad_norm: float
    delta: torch.Tensor | None = None
    path: list[torch.Tensor] | None = None        # relinearised AuxDPO: θ after each round
    capped: bool = False


def lbfgs(objective: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
           max_iter: int) -> tuple[torch.Tensor, float, int, float, bool]:
    """L-BFGS from ``x0``: (x, objective, iterations, ‖grad‖, capped); ``capped``: it used all
    ``max_iter`` iterations (or its evaluations) without reaching its gradient tolerance."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            history_size=50, tolerance_grad=GRAD_TOLERANCE,
                            tolerance_change=1e-13,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(x)
        value.backward()
        return value

    opt.step(closure)
    x = x.detach().requires_grad_(True)
    value = objective(x)
    (grad,) = torch.autograd.grad(value, x)
    state = opt.state[opt._params[0]]
    iterations = int(state.get("n_iter", 0))
    budget = iterations >= max_iter or int(state.get("func_evals", 0)) >= 2 * max_iter
    capped = budget and float(grad.abs().max()) > GRAD_TOLERANCE
    return x.detach(), float(value.detach()), iterations, float(grad.norm()), capped


def reward_metric(problem: PreferenceProblem) -> torch.Tensor:
    """Per-state Laplacians ``(S, A, A)`` of the pair graph with weights n·σ'(r*(a) − r*(a')).

    The DPO-family loss's Hessian with respect to the reward vector at r = r* (up to per-state
    constants, its null space); used only to precondition the solvers.
    """
    gap = problem.reward[:, :, None] - problem.reward[:, None, :]
    folded = problem.counts + problem.counts.transpose(1, 2)
    edge = folded * torch.sigmoid(gap) * torch.sigmoid(-gap)
    edge = edge * (1 - torch.eye(problem.num_actions, dtype=DTYPE))
    return torch.diag_embed(edge.sum(-1)) - edge


def inverse_root(matrix: torch.Tensor, floor: float = 1e-9) -> torch.Tensor:
    """(M + ε)^{-1/2} for symmetric PSD ``matrix`` (batched), ε = floor·λ_max: full rank."""
    symmetric = 0.5 * (matrix + matrix.transpose(-1, -2))
    try:
        evals, evecs = torch.linalg.eigh(symmetric)
    except torch.linalg.LinAlgError:
        # LAPACK's divide-and-conquer (syevd) can fail on a few ill-conditioned blocks
        # (repeated eigenvalues); the QR-iteration driver does not.
        import numpy as np
        import scipy.linalg

        blocks = symmetric.detach().cpu().numpy().reshape(-1, *symmetric.shape[-2:])
        pairs = [scipy.linalg.eigh(b, driver="ev") for b in blocks]
        evals = torch.from_numpy(np.stack([p[0] for p in pairs])).to(symmetric)
        evecs = torch.from_numpy(np.stack([p[1] for p in pairs])).to(symmetric)
        evals, evecs = evals.reshape(symmetric.shape[:-1]), evecs.reshape(symmetric.shape)
    top = evals.amax(dim=-1, keepdim=True).clamp_min(1e-300)
    scale = evals.clamp_min(0).add(floor * top).rsqrt()
    return (evecs * scale[..., None, :]) @ evecs.transpose(-1, -2)


def theta_root(score: torch.Tensor, laplacian: torch.Tensor, floor: float) -> torch.Tensor:
    """G^{-1/2} ``(d, d)``, G = Σ_s A_s·L_s·A_sᵀ: the DPO-family loss's curvature in θ (up to
    β²) from the score matrix ``(d, S·A)`` and :func:`reward_metric`'s ``(S, A, A)``."""
    S, nA = laplacian.shape[0], laplacian.shape[1]
    blocks = score.reshape(-1, S, nA).transpose(0, 1)                       # (S, d, A)
    return inverse_root((blocks @ laplacian @ blocks.transpose(1, 2)).sum(0), floor)


def lbfgs_rounds(objective: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
            max_iter: int, restarts: int, recentre: Callable[[torch.Tensor], torch.Tensor]
            ) -> tuple[torch.Tensor, float, int, float, bool]:
    """``restarts`` L-BFGS rounds of ``max_iter`` iterations; between rounds ``recentre(x)``
    moves the parametrisation's centre to the point x stands for, re-preconditions there, and
    returns the same point's new coordinates. Iterations are summed over rounds; the flag
    says whether the last round stopped at the cap."""
    x, value, its, gnorm, capped = lbfgs(objective, x0, max_iter)
    for _ in range(restarts - 1):
        x, value, more, gnorm, capped = lbfgs(objective, recentre(x), max_iter)
        its += more
    return x, value, its, gnorm, capped
