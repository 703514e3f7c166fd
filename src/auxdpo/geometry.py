"""Local geometry of a policy class around its base policy (paper Sections 3.1 and 4.1).

Notation (m = |S|·|A| responses, index (s, a) in row-major order, d parameters):

* ``A`` ``(d, m)``: A_θ₀, columns ∇_θ log π_θ₀(a|s) (the score of each response);
* ``weights`` ``(m,)``: the diagonal of D_ρ,θ₀, i.e. ρ(s)·π_θ₀(a|s);
* A_ρ,θ₀ = A·D ``(d, m)``, columns ρ(s)∇π_θ₀(a|s);
* F_ρ,θ₀ = A D Aᵀ = A_ρ D⁻¹ A_ρᵀ ``(d, d)``: the Fisher information at θ₀.

All functions take and return float64 torch tensors (:func:`null_space` keeps a float32
input's dtype). Rank decisions (null spaces, pseudo-inverses) use singular values with the
relative tolerance ``rtol`` (default: max(rows, cols)·machine-ε, NumPy's ``matrix_rank``
convention): a singular value σ counts as zero when σ ≤ rtol·σ_max.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = [
    "base_weights",
    "fisher_matrix",
    "local_rlhf_step",
    "min_norm_reward",
    "min_norm_solution",
    "null_space",
    "null_space_basis",
    "numerical_rank",
    "score_matrix",
    "unit_rows",
    "weighted_score_matrix",
]

DTYPE = torch.float64


def score_matrix(log_probs_fn: Callable[[torch.Tensor], torch.Tensor],
                 theta0: torch.Tensor) -> torch.Tensor:
    """A_θ₀ ``(d, m)``: column (s, a) is ∇_θ log π_θ(a|s) at θ₀ (paper Sec. 3.1).

    ``log_probs_fn`` maps θ ``(d,)`` to log-probs ``(S, A)``; it is differentiated exactly
    with autograd (one Jacobian, no finite differences).
    """
    theta0 = torch.as_tensor(theta0, dtype=DTYPE).detach()
    jac = torch.autograd.functional.jacobian(log_probs_fn, theta0, vectorize=True)  # (S, A, d)
    return jac.reshape(-1, theta0.numel()).T.contiguous()


def base_weights(rho: torch.Tensor, log_probs0: torch.Tensor) -> torch.Tensor:
    """diag(D_ρ,θ₀) ``(m,)``: ρ(s)·π_θ₀(a|s) for ``rho`` ``(S,)`` and log π_θ₀ ``(S, A)``."""
    rho = torch.as_tensor(rho, dtype=DTYPE)
    if rho.ndim != 1 or rho.shape[0] != log_probs0.shape[0]:
        raise ValueError(f"rho has shape {tuple(rho.shape)}, expected ({log_probs0.shape[0]},)")
    return (rho[:, None] * log_probs0.detach().to(DTYPE).exp()).reshape(-1)


def weighted_score_matrix(A: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A_ρ,θ₀ = A_θ₀·D_ρ,θ₀ ``(d, m)`` (paper Sec. 4.1)."""
    return A * weights[None, :]


def fisher_matrix(A: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """F_ρ,θ₀ = E_ρ,π₀[∇log π ∇log πᵀ] = A D Aᵀ ``(d, d)`` (= A_ρ D⁻¹ A_ρᵀ, proof of Eq. 9)."""
    return (A * weights[None, :]) @ A.T


def _svd_rank(singular_values: torch.Tensor, shape: tuple[int, int],
              rtol: float | None) -> int:
    if singular_values.numel() == 0:
        return 0
    tol = (max(shape) * torch.finfo(DTYPE).eps) if rtol is None else rtol
    return int((singular_values > tol * singular_values.max()).sum())


def numerical_rank(matrix: torch.Tensor, rtol: float | None = None) -> int:
    """Rank of ``matrix`` with the module's singular-value tolerance."""
    m = torch.as_tensor(matrix, dtype=DTYPE)
    return _svd_rank(torch.linalg.svdvals(m), tuple(m.shape), rtol)


def unit_rows(matrix: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """``matrix`` ``(k, n)`` with each row scaled to unit norm; numerically zero rows stay 0.

    A row whose norm is below rtol (default max(k, n)·ε) times the largest row norm carries no
    constraint (e.g. the score row of a dead parameter): scaling it up to unit norm would turn
    round-off into a spurious constraint, so it is zeroed instead.
    """
    norms = matrix.norm(dim=1, keepdim=True)
    tol = (max(matrix.shape) * torch.finfo(DTYPE).eps) if rtol is None else rtol
    live = norms > tol * norms.max().clamp_min(torch.finfo(DTYPE).tiny)
    return torch.where(live, matrix / norms.clamp_min(torch.finfo(DTYPE).tiny),
                       torch.zeros_like(matrix))


def _left_singular(matrix: torch.Tensor, rtol: float | None
                   ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Thin SVD of ``matrix``ᵀ (``matrix`` ``(k, n)``): (U ``(n, min(k, n))``, rank, the matrix
    as computed), the rank counting singular values above ``rtol · s_max`` (default
    ``rtol = max(k, n) · eps(dtype)``)."""
    m = matrix if isinstance(matrix, torch.Tensor) and matrix.is_floating_point() else \
        torch.as_tensor(matrix, dtype=DTYPE)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-d, got shape {tuple(m.shape)}")
    if rtol is None:
        rtol = max(m.shape) * torch.finfo(m.dtype).eps
    left, singular, _ = torch.linalg.svd(m.T, full_matrices=False)
    threshold = rtol * singular.max() if singular.numel() else 0.0
    rank = int((singular > threshold).sum()) if singular.numel() else 0
    return left, rank, m


def null_space(matrix: torch.Tensor, rtol: float | None = None) -> tuple[torch.Tensor, int]:
    """``(Γ, r)``: an orthonormal basis Γ ``(n, n − r)`` of N(matrix) and r = rank(matrix), for
    ``matrix`` ``(k, n)``.

    Thin SVD of the transpose, matrixᵀ = U S Vᵀ: the columns of U whose singular value is at
    most ``rtol · s_max`` span part of N(matrix); when k < n a QR factorisation completes U's
    columns with the orthogonal complement of its span (the rest of N(matrix)). Default
    ``rtol = max(k, n) · eps(dtype)``. A floating-point ``matrix`` keeps its dtype (float32 in,
    float32 out, with float32's ε); anything else is converted to float64. This is the one
    null-space implementation: AuxDPO's projection mode (:mod:`auxdpo.offsets.projection`),
    the lab's solvers and, through :func:`row_space`, the oracle's projector call it.
    """
    left, rank, m = _left_singular(matrix, rtol)
    cols, rows = m.shape                                        # (k, n)
    pieces = [left[:, rank:]]
    if cols < rows:
        complete, _ = torch.linalg.qr(left, mode="complete")
        pieces.append(complete[:, cols:])
    return torch.cat(pieces, dim=1), rank


def row_space(matrix: torch.Tensor, rtol: float | None = None) -> tuple[torch.Tensor, int]:
    """``(V, r)``: an orthonormal basis V ``(n, r)`` of the row space of ``matrix`` ``(k, n)``,
    the complement of :func:`null_space`'s Γ (same SVD, same rank). The projector onto
    N(matrix) is I − V Vᵀ, which is cheaper than Γ Γᵀ when r ≪ n."""
    left, rank, _ = _left_singular(matrix, rtol)
    return left[:, :rank], rank


def null_space_basis(matrix: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Orthonormal basis Γ ``(n, n − r)`` of N(matrix) for ``matrix`` ``(k, n)`` of rank r
    (:func:`null_space`). Γᵀ Γ = I and matrix·Γ ≈ 0; AuxDPO's offsets are δ = Γ c (paper
    Sec. 7.2).
    """
    return null_space(matrix, rtol)[0]


def min_norm_reward(A: torch.Tensor, theta: torch.Tensor, theta0: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """r̄ = β·Aᵀ(θ − θ₀) ``(m,)``: the D-norm-smallest member of RLHF's class R_eq(θ) (Eq. 9).

    It is also the first-order expansion of DPO's implicit reward β log π_θ/π_θ₀.
    """
    return beta * (A.T @ (theta - theta0))  # Eq. 9: β D⁻¹ A_ρᵀ (θ − θ₀) = β Aᵀ (θ − θ₀)


def min_norm_solution(A_rho: torch.Tensor, weights: torch.Tensor,
                      rhs: torch.Tensor) -> torch.Tensor:
    """argmin_r rᵀ D r subject to A_ρ r = rhs, by Lagrange multipliers (Eq. 8-9).

    r = D⁻¹ A_ρᵀ (A_ρ D⁻¹ A_ρᵀ)⁺ rhs; with rhs = βF(θ − θ₀) this equals
    :func:`min_norm_reward` (the identity of Eq. 9).
    """
    gram = (A_rho / weights[None, :]) @ A_rho.T
    return (A_rho.T @ (torch.linalg.pinv(gram, hermitian=True) @ rhs)) / weights


def local_rlhf_step(A: torch.Tensor, weights: torch.Tensor, reward: torch.Tensor,
                    beta: float, theta0: torch.Tensor, rtol: float | None = None
                    ) -> torch.Tensor:
    """θ₀ + (1/β)·F⁺·A_ρ,θ₀·r* ``(d,)``: maximiser of RLHF's local quadratic model (Eq. 5).

    Computed as the minimum-norm D-weighted least-squares fit x = argmin ‖Aᵀx − r*‖²_D
    (its normal equations are F x = A_ρ r*), via the SVD of D^{1/2}Aᵀ: better conditioned
    than forming F⁺, and the same rank tolerance as :func:`null_space_basis`.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}")
    root = weights.sqrt()
    design = A.T * root[:, None]                       # D^{1/2} Aᵀ, (m, d)
    u, s, vh = torch.linalg.svd(design, full_matrices=False)
    rank = _svd_rank(s, tuple(design.shape), rtol)
    coef = (u[:, :rank].T @ (root * reward.reshape(-1))) / s[:rank]
    return theta0 + (vh[:rank].T @ coef) / beta        # Eq. 5
