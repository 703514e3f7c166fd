"""What the oracle reports for a policy θ, all exact (every response enumerated).

* ``gap_closed``: (J(θ) − J(θ₀)) / (J(θ_RLHF) − J(θ₀)), J the KL-regularised objective (Eq. 1);
  1 is the RLHF optimum over the same trainable parameters, < 0 means worse than not training;
* ``reward``: E_ρ,π_θ[r*]; ``kl``: E_ρ KL(π_θ(·|s) ‖ π₀(·|s));
* ``reversal``: share of the training prompts' response pairs (a, a') with r*(a) ≠ r*(a') whose
  r* order disagrees with the order of their log-probability change log π_θ/π₀ (ties count ½);
* ``heldout_acc``: pairwise accuracy on the held-out prompts — pairs weighted by π₀(a)π₀(a'),
  correct when the implicit reward β log π_θ/π₀ orders the pair as r* does (ties count ½).
"""

from __future__ import annotations

import torch

__all__ = ["METRICS", "pair_agreement", "policy_metrics"]

METRICS = ("gap_closed", "reward", "kl", "reversal", "heldout_acc")


def pair_agreement(reward: torch.Tensor, change: torch.Tensor,
                   pair_weight: torch.Tensor | None = None) -> float:
    """Weighted share of pairs a ≠ a' with r* gap ≠ 0 where sign(Δr*) = sign(Δchange).

    ``reward``, ``change`` ``(S, A)``; ``pair_weight`` ``(S, A, A)`` (default: all pairs 1).
    Ties in ``change`` count ½.
    """
    reward_gap = reward[:, :, None] - reward[:, None, :]
    change_gap = change[:, :, None] - change[:, None, :]
    valid = reward_gap != 0
    weight = valid.to(reward.dtype) if pair_weight is None else pair_weight * valid
    score = torch.where(reward_gap * change_gap > 0, 1.0,
                        torch.where(change_gap == 0, 0.5, 0.0)).to(reward.dtype)
    total = float(weight.sum())
    return float((weight * score).sum()) / total if total > 0 else float("nan")


def policy_metrics(log_probs: torch.Tensor, log_probs0: torch.Tensor, reward: torch.Tensor,
                   rho: torch.Tensor, beta: float, *, j_base: float, j_rlhf: float
                   ) -> dict[str, float]:
    """The module's metrics for log π_θ and log π₀ ``(S + H, A)`` (first S rows: training)."""
    from auxdpo.harness.oracle.solvers import rlhf_objective

    S = rho.numel()
    train, train0, r_train = log_probs[:S], log_probs0[:S], reward[:S]
    j = float(rlhf_objective(train, train0, r_train, rho, beta))
    probs = train.exp()
    out = {
        "J": j,
        "gap_closed": (j - j_base) / (j_rlhf - j_base),
        "reward": float((rho * (probs * r_train).sum(1)).sum()),
        "kl": float((rho * (probs * (train - train0)).sum(1)).sum()),
        "reversal": 1.0 - pair_agreement(r_train, train - train0),
    }
    if log_probs.shape[0] > S:
        held, held0 = log_probs[S:], log_probs0[S:]
        p0 = held0.exp()
        weight = p0[:, :, None] * p0[:, None, :]
        out["heldout_acc"] = pair_agreement(reward[S:], held - held0, weight)
    else:
        out["heldout_acc"] = float("nan")
    return out
