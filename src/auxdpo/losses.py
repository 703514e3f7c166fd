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

TRL 1.16's other ``loss_type`` values are registered under their TRL names (``hinge``,
``robust``, ``exo_pair``, ``nca_pair``, ``bco_pair``, ``sppo_hard``, ``apo_zero``, ``apo_down``,
``discopop``, ``aot``, ``aot_unpaired``, ``sigmoid_norm``), each citing its source on its line;
``PAPER_METHODS`` are the four above. ``f_divergence_score`` is f-DPO's reward transform.

Soft labels: with a per-example preference probability ``pref_prob`` p the loss becomes
p·ℓ(w≻l) + (1−p)·ℓ(l≻w), where ℓ(l≻w) is the same method with the two responses (and, for
AuxDPO, their offsets) swapped. With p = σ(r*(a_w) − r*(a_l)) and ``weight`` = n(s, a_w, a_l)
the sum of the per-example losses is the paper's population loss (Eq. 3 for DPO, Eq. 7 for
AuxDPO).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "F_DIVERGENCES",
    "LOSSES",
    "PAPER_METHODS",
    "PreferenceLoss",
    "auxdpo_loss",
    "dpo_loss",
    "dpop_loss",
    "f_divergence_score",
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


# ---- TRL 1.16's other pairwise losses (loss_type names), same conventions -----------------
# r_w = β·(log π(a_w) − log π_ref(a_w)), r_l likewise; z = β·h. TRL's formulas are the spec:
# tests/train/test_train_trl_compat.py checks each against trl's DPOTrainer on the same batch.

def _hinge_dir(pw, pl, rw, rl, *, beta):
    return torch.relu(1 - beta * ((pw - rw) - (pl - rl)))  # SLiC hinge, Zhao et al. 2023 Eq. 1


def _robust_dir(pw, pl, rw, rl, *, beta, label_smoothing):
    z, eps = beta * ((pw - rw) - (pl - rl)), label_smoothing  # rDPO, Chowdhury et al. 2024 Eq. 8
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def _exo_pair_dir(pw, pl, rw, rl, *, beta, label_smoothing):
    z, eps = beta * ((pw - rw) - (pl - rl)), label_smoothing  # EXO, Ji et al. 2024 Eq. 16
    return (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))
            + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps)))


def _nca_pair_dir(pw, pl, rw, rl, *, beta):
    r_w, r_l = beta * (pw - rw), beta * (pl - rl)  # NCA, Chen et al. 2024 Eq. 11 (K = 2)
    return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)


def _bco_pair_dir(pw, pl, rw, rl, *, beta):
    r_w, r_l = beta * (pw - rw), beta * (pl - rl)  # BCO, Jung et al. 2024 Eq. 4, paired, δ = 0
    return -F.logsigmoid(r_w) - F.logsigmoid(-r_l)


def _sppo_hard_dir(pw, pl, rw, rl, *, beta):
    # SPPO, Wu et al. 2024 Eq. 4.7 with the hard label P(a_w ≻ ·) = 1, P(a_l ≻ ·) = 0.
    return ((pw - rw) - 0.5 / beta) ** 2 + ((pl - rl) + 0.5 / beta) ** 2


def _apo_zero_dir(pw, pl, rw, rl, *, beta):
    # APO-zero, D'Oosterlinck et al. 2024 Eq. 7: raise the chosen, lower the rejected likelihood.
    return 1 - torch.sigmoid(beta * (pw - rw)) + torch.sigmoid(beta * (pl - rl))


def _apo_down_dir(pw, pl, rw, rl, *, beta):
    # APO-down, D'Oosterlinck et al. 2024 Eq. 8: lower both, the rejected more.
    return torch.sigmoid(beta * (pw - rw)) + 1 - torch.sigmoid(beta * ((pw - rw) - (pl - rl)))


def _discopop_dir(pw, pl, rw, rl, *, beta, discopop_tau):
    z = beta * ((pw - rw) - (pl - rl))  # DiscoPOP (log-ratio modulated), Lu et al. 2024 Eq. 5
    mix = torch.sigmoid(z / discopop_tau)
    return -F.logsigmoid(z) * (1 - mix) + torch.exp(-z) * mix


def _pairwise(direction: DirectionalLoss, name: str, summary: str, **defaults):
    """A public loss around a directional one, with keyword hyperparameters ``defaults``."""

    def loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             *, beta, pref_prob=None, weight=None, **hyper) -> PreferenceLoss:
        unknown = set(hyper) - set(defaults)
        if unknown:
            raise TypeError(f"{name}_loss got unexpected hyperparameter(s) {sorted(unknown)}")
        values = {**defaults, **hyper}
        eps = values.get("label_smoothing")
        if name == "exo_pair" and not 0 < eps < 1:
            raise ValueError(f"exo_pair needs label_smoothing in (0, 1), got {eps!r}")
        if name == "robust" and not 0 <= eps < 0.5:
            raise ValueError(f"robust needs label_smoothing in [0, 0.5), got {eps!r}")
        logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        return _score(direction, logps, beta=beta, pref_prob=pref_prob, weight=weight, **values)

    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    loss.__doc__ = f"{summary} All tensors ``(B,)``; per-example losses and rewards."
    return loss


hinge_loss = _pairwise(_hinge_dir, "hinge", "SLiC hinge: max(0, 1 − β·h).")
robust_loss = _pairwise(_robust_dir, "robust", "Robust DPO for labels flipped with probability "
                        "ε = label_smoothing.", label_smoothing=0.0)
exo_pair_loss = _pairwise(_exo_pair_dir, "exo_pair", "EXO-pref: KL from softmax(β·h) to "
                          "(1−ε, ε).", label_smoothing=1e-3)
nca_pair_loss = _pairwise(_nca_pair_dir, "nca_pair", "NCA, pairwise.")
bco_pair_loss = _pairwise(_bco_pair_dir, "bco_pair", "BCO, pairwise, without the running δ.")
sppo_hard_loss = _pairwise(_sppo_hard_dir, "sppo_hard", "SPPO with hard preference labels.")
apo_zero_loss = _pairwise(_apo_zero_dir, "apo_zero", "APO-zero (anchored preference).")
apo_down_loss = _pairwise(_apo_down_dir, "apo_down", "APO-down (anchored preference).")
discopop_loss = _pairwise(_discopop_dir, "discopop", "DiscoPOP, log-ratio modulated.",
                          discopop_tau=0.05)


def _sorted_pairs_loss(first: torch.Tensor, second: torch.Tensor, *, beta, label_smoothing):
    # AOT, Melnyk et al. 2024 Eq. 10: compare the batch's sorted quantities (OT in one dimension).
    gap = torch.sort(first, dim=0).values - torch.sort(second, dim=0).values
    return (-F.logsigmoid(beta * gap) * (1 - label_smoothing)
            - F.logsigmoid(-beta * gap) * label_smoothing)


def _aot(paired: bool):
    name = "aot" if paired else "aot_unpaired"

    def loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             *, beta, label_smoothing: float = 0.0, pref_prob=None, weight=None) -> PreferenceLoss:
        if pref_prob is not None or weight is not None:
            raise ValueError(f"{name} sorts margins across the batch, so per-example soft "
                             "labels and weights have no pair to attach to")
        logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        _check(*logps, beta)
        pw, pl, rw, rl = logps
        if paired:  # policy log-ratio vs reference log-ratio of each pair
            first, second = pw - pl, rw - rl
        else:       # chosen rewards vs rejected rewards, each sorted on its own
            first, second = pw - rw, pl - rl
        losses = _sorted_pairs_loss(first, second, beta=beta, label_smoothing=label_smoothing)
        return PreferenceLoss(losses, beta * (pw - rw).detach(), beta * (pl - rl).detach())

    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    loss.__doc__ = f"AOT ({'paired' if paired else 'unpaired'}): batch-sorted margins."
    return loss


aot_loss, aot_unpaired_loss = _aot(True), _aot(False)

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def f_divergence_score(logratio: torch.Tensor, kind: str, alpha: float = 0.5) -> torch.Tensor:
    """f'(π/π_ref) as a function of u = log(π/π_ref): the f-DPO reward (Wang et al. 2024, Thm. 1).

    reverse_kl: u; forward_kl: 1 − e^{−u}; js_divergence: log 2 + log σ(u);
    alpha_divergence: (e^{(α−1)u} − 1)/(α − 1), with (α−1)u clamped at 80 as TRL does so that
    the exponential stays finite in float32, and u itself at α = 1.
    """
    if kind == "reverse_kl" or (kind == "alpha_divergence" and abs(alpha - 1.0) < 1e-6):
        return logratio
    if kind == "forward_kl":
        return 1 - torch.exp(-logratio)
    if kind == "js_divergence":
        return math.log(2) + F.logsigmoid(logratio)
    if kind == "alpha_divergence":
        exponent = torch.clamp((alpha - 1.0) * logratio.float(), max=80.0)
        return ((torch.exp(exponent) - 1.0) / (alpha - 1.0)).to(logratio.dtype)
    raise ValueError(f"f_divergence_type must be one of {F_DIVERGENCES}, got {kind!r}")


# The paper's four methods; the lab and the oracle compare these.
PAPER_METHODS = ("dpo", "ipo", "dpop", "auxdpo")

LOSSES: dict[str, Callable[..., PreferenceLoss]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "dpop": dpop_loss,
    "auxdpo": auxdpo_loss,
    "hinge": hinge_loss,
    "robust": robust_loss,
    "exo_pair": exo_pair_loss,
    "nca_pair": nca_pair_loss,
    "bco_pair": bco_pair_loss,
    "sppo_hard": sppo_hard_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "discopop": discopop_loss,
    "aot": aot_loss,
    "aot_unpaired": aot_unpaired_loss,
    # TRL's sigmoid_norm is DPO on token-mean log-probs; the trainer averages for this name.
    "sigmoid_norm": dpo_loss,
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
