"""Preference losses as pure functions of per-example log-probs.

Every method is a function of four ``(B,)`` tensors of sequence log-probs and keyword-only
hyperparameters. It returns per-example losses (never reduced) and the implicit rewards
β·log π/π_ref of the chosen and rejected responses. No function here calls a model: the exact
lab, the oracle benchmarks and the trainer all score margins through these same functions.

With DPO's log-ratio difference

    h = (log π(a_w) − log π_ref(a_w)) − (log π(a_l) − log π_ref(a_l)),

the methods are

=========  ===============================================================================
``dpo``    −log σ(β·h)                                     (Rafailov et al. 2023, Eq. 7)
``ipo``    (h − 1/(2β))²,  β playing IPO's τ                (Azar et al. 2023, Eq. 17)
``dpop``   −log σ(β·(h − λ·max(0, log π_ref(a_w) − log π(a_w))))   (Smaug, Pal et al. 2024)
``auxdpo`` −log σ(β·h + δ_w − δ_l),  δ in reward units          (paper, Sec. 4.2 / Eq. 7)
=========  ===============================================================================

Soft labels: with a per-example preference probability ``pref_prob`` p the loss becomes
p·ℓ(w≻l) + (1−p)·ℓ(l≻w), where ℓ(l≻w) is the same method with the two responses (and, for
AuxDPO, their offsets) swapped. With p = σ(r*(a_w) − r*(a_l)) and ``weight`` = n(s, a_w, a_l)
the sum of the per-example losses is the paper's population loss (Eq. 3 for DPO, Eq. 7 for
AuxDPO).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "PreferenceLoss",
    "auxdpo_loss",
    "dpo_loss",
    "dpop_loss",
    "get_loss",
    "ipo_loss",
    "preference_loss",
]


class PreferenceLoss(NamedTuple):
    """Per-example outputs of a preference loss, all of shape ``(B,)``.

    ``chosen_rewards``/``rejected_rewards`` are the implicit rewards β·log π/π_ref of the
    model alone (AuxDPO's offsets are not included, so the numbers compare across methods).
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


# A "directional" loss scores the claim "first response ≻ second response". Arguments are the
# first and second response's policy and reference log-probs, then keyword hyperparameters.
DirectionalLoss = Callable[..., torch.Tensor]


def _check(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
           beta):
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    shape = policy_chosen_logps.shape
    for name, t in (("policy_rejected_logps", policy_rejected_logps),
                    ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        if t.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} "
                "(all four log-prob tensors must be (B,))")


def _soft(direction: DirectionalLoss, pw, pl, rw, rl, pref_prob, weight, **kw) -> torch.Tensor:
    """p·ℓ(w≻l) + (1−p)·ℓ(l≻w), times the optional per-example weight."""
    forward = direction(pw, pl, rw, rl, **kw)
    if pref_prob is None:
        losses = forward
    else:
        p = torch.as_tensor(pref_prob, dtype=forward.dtype, device=forward.device)
        if torch.any((p < 0) | (p > 1)) or torch.any(torch.isnan(p)):
            raise ValueError("pref_prob must lie in [0, 1]")
        swapped_kw = {k: v for k, v in kw.items() if not k.startswith("delta_")}
        if "delta_first" in kw:
            swapped_kw["delta_first"] = kw["delta_second"]
            swapped_kw["delta_second"] = kw["delta_first"]
        backward = direction(pl, pw, rl, rw, **swapped_kw)
        losses = p * forward + (1 - p) * backward
    if weight is not None:
        losses = losses * torch.as_tensor(weight, dtype=losses.dtype, device=losses.device)
    return losses


def _score(direction: DirectionalLoss, logps, *, beta, pref_prob, weight, **kw):
    """Check the inputs, score the pair (soft label, weight), attach the implicit rewards."""
    _check(*logps, beta)
    losses = _soft(direction, *logps, pref_prob, weight, beta=beta, **kw)
    pw, pl, rw, rl = logps
    return PreferenceLoss(losses, beta * (pw - rw).detach(), beta * (pl - rl).detach())


# ---- directional losses -------------------------------------------------------------------

def _dpo_dir(pw, pl, rw, rl, *, beta):
    h = (pw - rw) - (pl - rl)
    return -F.logsigmoid(beta * h)  # DPO, Eq. 7 of Rafailov et al.; paper Eq. 3 per pair


def _ipo_dir(pw, pl, rw, rl, *, beta):
    h = (pw - rw) - (pl - rl)
    return (h - 1.0 / (2.0 * beta)) ** 2  # IPO, Azar et al. Eq. 17 with τ = β


def _dpop_dir(pw, pl, rw, rl, *, beta, lambda_):
    h = (pw - rw) - (pl - rl)
    # Smaug Eq. 3: penalise the preferred response's log-prob falling below the reference's.
    return -F.logsigmoid(beta * (h - lambda_ * torch.clamp(rw - pw, min=0)))


def _auxdpo_dir(pw, pl, rw, rl, *, beta, delta_first, delta_second):
    h = (pw - rw) - (pl - rl)
    # Paper Sec. 4.2: offsets are rewards, added outside β (a δ′ inside β is equivalent with
    # δ = β·δ′).
    return -F.logsigmoid(beta * h + delta_first - delta_second)


# ---- public losses ------------------------------------------------------------------------

def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float, pref_prob: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> PreferenceLoss:
    """DPO: −log σ(β·h). All tensors ``(B,)``; returns per-example losses and rewards."""
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _score(_dpo_dir, logps, beta=beta, pref_prob=pref_prob, weight=weight)


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float, pref_prob: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> PreferenceLoss:
    """IPO: (h − 1/(2β))², β playing IPO's τ. Callers average log-probs over tokens."""
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _score(_ipo_dir, logps, beta=beta, pref_prob=pref_prob, weight=weight)


def dpop_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
              beta: float, dpop_lambda: float = 50.0, pref_prob: torch.Tensor | None = None,
              weight: torch.Tensor | None = None) -> PreferenceLoss:
    """DPOP (DPO-Positive): −log σ(β·(h − λ·max(0, log π_ref(a_w) − log π(a_w))))."""
    if dpop_lambda < 0:
        raise ValueError(f"dpop_lambda must be >= 0, got {dpop_lambda!r}")
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _score(_dpop_dir, logps, beta=beta, pref_prob=pref_prob, weight=weight,
                  lambda_=dpop_lambda)


def auxdpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
                beta: float, delta_chosen: torch.Tensor | None = None,
                delta_rejected: torch.Tensor | None = None,
                pref_prob: torch.Tensor | None = None,
                weight: torch.Tensor | None = None) -> PreferenceLoss:
    """AuxDPO: −log σ(β·h + δ_w − δ_l); δ ``(B,)`` in reward units (zero when omitted).

    The null-space constraint on δ is not part of the loss: it lives in
    :mod:`auxdpo.offsets` (penalty or projection) and the lab's solvers.
    """
    zeros = torch.zeros_like(policy_chosen_logps)
    dw = zeros if delta_chosen is None else delta_chosen
    dl = zeros if delta_rejected is None else delta_rejected
    if dw.shape != zeros.shape or dl.shape != zeros.shape:
        raise ValueError("delta_chosen and delta_rejected must have the log-probs' shape (B,)")
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _score(_auxdpo_dir, logps, beta=beta, pref_prob=pref_prob, weight=weight,
                  delta_first=dw, delta_second=dl)


LOSSES: dict[str, Callable[..., PreferenceLoss]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "dpop": dpop_loss,
    "auxdpo": auxdpo_loss,
}


def get_loss(name: str) -> Callable[..., PreferenceLoss]:
    """The loss registered under ``name``; a clear error lists the known names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(LOSSES))}") from None


def preference_loss(method: str, *logps: torch.Tensor, **kwargs) -> PreferenceLoss:
    """Dispatch by name: ``preference_loss("dpo", pc, pr, rc, rr, beta=0.1)``."""
    return get_loss(method)(*logps, **kwargs)
