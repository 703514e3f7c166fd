"""Preference-data designs: pair counts n(s, a, a') over the training prompts.

Every design returns an ``(S, A, A)`` float64 tensor, symmetric, zero on the diagonal, scaled to
sum to 1 (scaling never moves a population minimiser; it keeps losses O(1)).

============  ================================================================================
on-policy     n ∝ ρ(s)·π₀(a|s)·π₀(a'|s): both responses drawn from the base policy
uniform       n ∝ ρ(s): every pair equally often
skew          n ∝ ρ·π₀·π₀·exp(σ·z), z symmetric i.i.d. N(0, 1): random log-normal skew
anti-aligned  on-policy counts, times K on the pairs whose r* order disagrees with the order
              of g(a) = ∇log π₀(a|s)ᵀΔ*, Δ* = F⁺A_ρ r* the local RLHF direction (Eq. 5):
              the paper's Proposition 2 mechanism made general (fitting those pairs pushes θ
              against RLHF)
============  ================================================================================
"""

from __future__ import annotations

import torch

__all__ = ["DESIGNS", "design_counts", "disagreeing_pairs"]

DTYPE = torch.float64
DESIGNS = ("anti-aligned", "on-policy", "uniform", "skew")


def disagreeing_pairs(reward: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``(S, A, A)`` bool: (r*(a) − r*(a'))·(g(a) − g(a')) < 0, for ``(S, A)`` inputs."""
    reward_gap = reward[:, :, None] - reward[:, None, :]
    score_gap = scores[:, :, None] - scores[:, None, :]
    return reward_gap * score_gap < 0


def design_counts(design: str, *, rho: torch.Tensor, probs0: torch.Tensor,
                  reward: torch.Tensor | None = None, direction_scores: torch.Tensor | None = None,
                  factor: float = 1000.0, skew: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Pair counts of ``design``.

    Args:
        design: one of :data:`DESIGNS`.
        rho: ρ ``(S,)``; probs0: π₀ ``(S, A)``.
        reward: r* ``(S, A)`` (anti-aligned only).
        direction_scores: g ``(S, A)`` = A_θ₀ᵀΔ* reshaped (anti-aligned only).
        factor: K, the anti-aligned up-weighting.
        skew: σ of the log-normal skew.
        generator: randomness of ``skew``.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    S, A = probs0.shape
    off_diagonal = 1.0 - torch.eye(A, dtype=DTYPE)
    on_policy = rho[:, None, None] * probs0[:, :, None] * probs0[:, None, :]
    if design == "uniform":
        counts = rho[:, None, None].expand(S, A, A).clone()
    elif design == "on-policy":
        counts = on_policy
    elif design == "skew":
        z = torch.triu(torch.randn(S, A, A, generator=generator, dtype=DTYPE), diagonal=1)
        counts = on_policy * torch.exp(skew * (z + z.transpose(1, 2)))
    else:
        if reward is None or direction_scores is None:
            raise ValueError("design 'anti-aligned' needs reward and direction_scores")
        if not factor > 0:
            raise ValueError(f"anti-aligned factor K must be positive, got {factor!r}")
        boost = torch.where(disagreeing_pairs(reward, direction_scores), float(factor), 1.0)
        counts = on_policy * boost
    counts = counts * off_diagonal
    return counts / counts.sum()
