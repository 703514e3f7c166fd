"""Vectorised solvers for the Proposition 2 instance over many count vectors at once.

The 1-d class π_θ ∝ [e^θ, e^−θ, 1] has a scalar θ, so DPO, IPO and DPOP are solved for every
grid point in one batched, bracket-safeguarded Newton iteration (:func:`bracketed_newton`);
AuxDPO adds the offset coordinates c (δ = Γc, Γ the instance's null-space basis) and uses a
batched Newton on (θ, c). Each point's loss is still scored by :mod:`auxdpo.losses`.
"""

from __future__ import annotations

import torch

from auxdpo.harness.lab.newton import batched_newton, bracketed_newton
from auxdpo.harness.lab.policies import DTYPE, three_response_policy
from auxdpo.harness.lab.problems import PROP2_REWARD, prop2_problem
from auxdpo.harness.lab.solvers import METHODS, auxdpo_offset_basis
from auxdpo.losses import get_loss

__all__ = ["simplex_grid", "solve_prop2_grid"]

# Pair order of the count vector (n12, n23, n31) as (first, second) actions.
_FIRST = torch.tensor([0, 1, 2])
_SECOND = torch.tensor([1, 2, 0])


def simplex_grid(resolution: int) -> torch.Tensor:
    """Interior points of the simplex lattice {(i, j, k)/N : i + j + k = N, all ≥ 1}.

    Returns ``(G, 3)`` proportions (n12, n23, n31), G = (N−1)(N−2)/2. The boundary is left
    out on purpose: at a corner only one pair is observed and AuxDPO's minimiser is not
    unique (the pair graph is disconnected).
    """
    if resolution < 3:
        raise ValueError(f"resolution must be >= 3, got {resolution}")
    pts = [(i, j, resolution - i - j) for i in range(1, resolution)
           for j in range(1, resolution - i)]
    return torch.tensor(pts, dtype=DTYPE) / resolution


def _grid_losses(method, beta, counts, dpop_lambda, theta, delta=None):
    """Per-grid-point population losses ``(G,)`` for θ ``(G,)`` and δ ``(G, 3)`` or None."""
    policy = three_response_policy()
    features = policy.features[0, :, 0]                              # (3,)
    logp = torch.log_softmax(theta[:, None] * features[None, :], dim=-1)  # (G, 3)
    reward = torch.tensor(PROP2_REWARD, dtype=DTYPE)
    G = theta.shape[0]
    pref = torch.sigmoid(reward[_FIRST] - reward[_SECOND]).repeat(G)
    ref = torch.full((3 * G,), -torch.log(torch.tensor(3.0, dtype=DTYPE)).item(), dtype=DTYPE)
    kw = {"dpop": {"dpop_lambda": float(dpop_lambda)}}.get(method, {})
    if delta is not None:
        kw.update(delta_chosen=delta[:, _FIRST].reshape(-1),
                  delta_rejected=delta[:, _SECOND].reshape(-1))
    out = get_loss(method)(logp[:, _FIRST].reshape(-1), logp[:, _SECOND].reshape(-1), ref, ref,
                           beta=beta, pref_prob=pref, weight=counts.reshape(-1), **kw)
    return out.losses.reshape(G, 3).sum(dim=1)  # Eq. 3 / Eq. 7 at every grid point


def solve_prop2_grid(beta: float, counts: torch.Tensor, *, dpop_lambda: float = 50.0,
                     methods=METHODS) -> dict[str, torch.Tensor]:
    """θ ``(G,)`` minimising each method's population loss for every row of ``counts``.

    ``counts`` ``(G, 3)`` holds (n12, n23, n31) per grid point (any positive scale).
    """
    counts = torch.as_tensor(counts, dtype=DTYPE)
    if counts.ndim != 2 or counts.shape[1] != 3:
        raise ValueError(f"counts must have shape (G, 3), got {tuple(counts.shape)}")
    if not torch.all(torch.isfinite(counts)) or torch.any(counts < 0):
        raise ValueError("counts must be finite and non-negative")
    G = counts.shape[0]
    start = torch.zeros(G, dtype=DTYPE)
    out = {}
    for method in methods:
        if method == "auxdpo":
            out[method] = _solve_auxdpo_grid(beta, counts)
            continue
        out[method] = bracketed_newton(
            lambda th, m=method: _grid_losses(m, beta, counts, dpop_lambda, th), start,
            width=1.0 / beta)
    return out


def _solve_auxdpo_grid(beta: float, counts: torch.Tensor) -> torch.Tensor:
    policy = three_response_policy()
    basis = auxdpo_offset_basis(policy, prop2_problem(beta))           # (3, k), δ = Γ c
    k = basis.shape[1]

    def losses(x):
        return _grid_losses("auxdpo", beta, counts, 0.0, x[:, 0], x[:, 1:] @ basis.T)

    x0 = torch.zeros(counts.shape[0], 1 + k, dtype=DTYPE)
    x, _ = batched_newton(losses, x0)
    return x[:, 0]
