"""The local (large-β) model of DPO, AuxDPO and RLHF on a data set's own responses.

Around θ₀ the policy is log-linear in its scores: log π_θ(a|s) − log π_θ₀(a|s) ≈ g_aᵀ(θ − θ₀),
g_a = ∇log π_θ₀(a|s) (paper Sec. 3–4). On the K unique responses of the data (prompt p(k),
scores A = [g_k], d × K) and a reward r̂ fitted to the comparisons, with x = β(θ − θ₀):

* **RLHF** (Eq. 5): x maximises E_π[r̂] − β·KL to second order: the D-weighted least-squares
  fit of r̂ by Aᵀx, D_k = ρ(s)·π̃₀(a_k|s) (ρ uniform over prompts, π̃₀ = π_θ₀ renormalised over
  the prompt's observed responses), up to a constant per prompt.
* **DPO**: the logistic loss Σ count·ℓ((g_i − g_j)ᵀx) on the comparisons, labelled by r̂
  (p = σ(r̂_i − r̂_j)), minimised exactly: in the log-linear class DPO's loss depends on θ only
  through x, so this is DPO's solution there, whatever β. It projects r̂ with the pair
  counts' weights, not the policy's: misspecified when r̂ is not representable (Sec. 4.1).
* **AuxDPO**: the same with offsets δ on the margins (exact minimiser), δ in the null space of Σ_k D_k δ_k g_k
  (the trainer's ``aux_null_weights: prompt``) and the Gaussian prior Σ_k τ_k δ_k² of
  :mod:`auxdpo.offsets.prior`. With identified comparisons, full support and no prior its
  step is RLHF's.

Each method's predicted gain is the first-order change of E_π̃[r̂] along its step; the
prediction reported is gain / RLHF's gain (1: the RLHF step's; < 0: r̂'s expectation falls).
Everything after :func:`score_coordinates` runs in K-space: the scores enter through their
coordinates Z (r × K) in an orthonormal basis of their span (A = U Z), so the solves cost what
K does, not d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from auxdpo.geometry import row_space

__all__ = ["Comparisons", "LocalPrediction", "bootstrap_gaps", "centered", "components",
           "fit_reward",
           "local_model", "policy_weights", "reward_precision", "reward_prior",
           "score_coordinates"]

DTYPE = torch.float64


@dataclass(frozen=True)
class Comparisons:
    """Pairwise comparisons over K responses.

    ``prompt`` ``(K,)``: each response's prompt (0 … P − 1). ``first``, ``second`` ``(M,)``:
    the two responses of each pair; ``pref`` ``(M,)``: the probability that the first is
    preferred (1 for a hard label); ``count`` ``(M,)``: the pair's weight.
    """

    prompt: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    pref: torch.Tensor
    count: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        object.__setattr__(self, "prompt", torch.as_tensor(self.prompt).long())
        object.__setattr__(self, "first", torch.as_tensor(self.first).long())
        object.__setattr__(self, "second", torch.as_tensor(self.second).long())
        object.__setattr__(self, "pref", torch.as_tensor(self.pref, dtype=DTYPE))
        count = torch.ones_like(self.pref) if self.count is None else \
            torch.as_tensor(self.count, dtype=DTYPE)
        object.__setattr__(self, "count", count)
        m = self.first.numel()
        if not (self.second.numel() == self.pref.numel() == self.count.numel() == m):
            raise ValueError("first, second, pref and count must have one entry per pair")
        if m and (int(torch.maximum(self.first, self.second).max()) >= self.num_responses
                  or int(torch.minimum(self.first, self.second).min()) < 0):
            raise ValueError("a pair names a response outside prompt's range")

    @property
    def num_responses(self) -> int:
        return self.prompt.numel()

    @property
    def num_prompts(self) -> int:
        return int(self.prompt.max()) + 1 if self.prompt.numel() else 0

    def sides(self) -> torch.Tensor:
        """``(K,)``: how many pair sides each response fills (its c_k)."""
        both = torch.cat([self.first, self.second])
        return torch.bincount(both, minlength=self.num_responses).to(DTYPE)


@dataclass
class LocalPrediction:
    """What the local model predicts for one data set (see the module's docstring)."""

    predicted_gap: dict[str, float]     # gain / RLHF's gain, per method ("dpo", "auxdpo")
    step_cosine: float                  # cos(DPO's step, RLHF's step) in parameter space
    rank: int                           # rank of the prompt-centred scores
    identified: int                     # reward directions the comparisons identify
    null_dim: int                       # identified − rank: where DPO can be misspecified
    steps: dict[str, torch.Tensor]      # y per method (x = β(θ − θ₀) = U y)
    offsets: torch.Tensor               # AuxDPO's δ (K,)


def reward_precision(comparisons: Comparisons, scale: float | None,
                     half_count: float | None, sides: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """τ_k of the offsets' Gaussian prior: (1 + c½/c_k)/σ² (c_k: pair sides, one per row as
    the trainer counts them, or ``sides``; 1/σ² without c½; 0 without σ) —
    :func:`auxdpo.offsets.prior.slot_precision`'s values."""
    k = comparisons.num_responses
    if scale is None:
        return torch.zeros(k, dtype=DTYPE)
    tau = torch.full((k,), 1.0 / float(scale) ** 2, dtype=DTYPE)
    if half_count is not None:
        counts = comparisons.sides() if sides is None else sides
        tau = tau * (1 + float(half_count) / counts.clamp_min(1))
    return tau


def reward_prior(comparisons: Comparisons, scale: float | None) -> torch.Tensor:
    """τ of r̂'s prior: 1/σ² for every response (0 without σ). Flat, unlike the offsets'
    prior: a precision that grows for responses in few pairs shrinks their r̂ toward 0, and
    those are where DPO's pair-count weights fall short of the policy's, so r̂ hid DPO's
    misspecification at 6 pairs per response (docs/diagnose.md, "Measured")."""
    return reward_precision(comparisons, scale, None)


def fit_reward(comparisons: Comparisons, tau: torch.Tensor) -> torch.Tensor:
    """r̂ ``(K,)``: the Bradley–Terry reward of the comparisons with the Gaussian prior τ,
    argmin Σ_m count·[−p log σ(r_i − r_j) − (1 − p) log σ(r_j − r_i)] + ½Σ_k τ_k r_k²
    (convex; L-BFGS). Responses with τ_k = 0 need comparisons that do not separate them."""
    from scipy.optimize import minimize

    i, j = comparisons.first.numpy(), comparisons.second.numpy()
    p, n = comparisons.pref.numpy(), comparisons.count.numpy()
    t = tau.numpy()

    def objective(r):
        z = r[i] - r[j]
        loss = n * (p * np.logaddexp(0.0, -z) + (1 - p) * np.logaddexp(0.0, z))
        grad_z = n * (1.0 / (1.0 + np.exp(-z)) - p)               # d loss / dz
        grad = t * r
        np.add.at(grad, i, grad_z)
        np.add.at(grad, j, -grad_z)
        return float(loss.sum() + 0.5 * (t * r * r).sum()), grad

    start = np.zeros(comparisons.num_responses)
    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-14})
    return torch.as_tensor(result.x, dtype=DTYPE)


def policy_weights(prompt: torch.Tensor, logp0: torch.Tensor) -> torch.Tensor:
    """D ``(K,)``: ρ(s)·π̃₀(a|s), ρ uniform over the prompts present, π̃₀ = π_θ₀ renormalised
    over each prompt's observed responses (log-space, so long responses do not underflow)."""
    prompt = torch.as_tensor(prompt).long()
    logp0 = torch.as_tensor(logp0, dtype=DTYPE)
    groups = int(prompt.max()) + 1
    top = torch.full((groups,), -math.inf, dtype=DTYPE).scatter_reduce(
        0, prompt, logp0, reduce="amax")
    mass = torch.exp(logp0 - top[prompt])
    total = torch.zeros(groups, dtype=DTYPE).index_add(0, prompt, mass)
    present = int((total > 0).sum())
    return mass / total[prompt] / present


def centered(values: torch.Tensor, prompt: torch.Tensor, weights: torch.Tensor
             ) -> torch.Tensor:
    """``values`` (``(K,)`` or ``(r, K)``) minus their ``weights``-mean over each prompt."""
    groups = int(prompt.max()) + 1
    matrix = values.reshape(-1, values.shape[-1])
    total = torch.zeros(groups, dtype=DTYPE).index_add(0, prompt, weights)
    sums = torch.zeros(matrix.shape[0], groups, dtype=DTYPE).index_add(
        1, prompt, matrix * weights)
    means = sums / total.clamp_min(torch.finfo(DTYPE).tiny)
    return (matrix - means[:, prompt]).reshape(values.shape)


def score_coordinates(columns: torch.Tensor, rtol: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """For the score matrix A ``(d, K)``: coordinates Z ``(r, K)`` of its columns in an
    orthonormal basis U ``(d, r)`` of their span (A = U Z; a step y is θ − θ₀ = U y/β), from
    :func:`auxdpo.geometry.row_space` (its rank tolerance)."""
    columns = torch.as_tensor(columns, dtype=DTYPE)
    basis, _ = row_space(columns.T, rtol)
    return basis.T @ columns, basis


def _lstsq(design: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares (SVD; rank tolerance max(shape)·ε·s_max)."""
    if design.numel() == 0:
        return torch.zeros(design.shape[1], dtype=DTYPE)
    u, s, vh = torch.linalg.svd(design, full_matrices=False)
    keep = s > max(design.shape) * torch.finfo(DTYPE).eps * float(s.max())
    return vh[keep].T @ ((u[:, keep].T @ target) / s[keep])


def _logistic_fit(design: torch.Tensor, labels: torch.Tensor, count: torch.Tensor,
                  offsets: tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                 torch.Tensor] | None = None) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
    """(v, δ): argmin Σ_m count·[−p log σ(μ_m) − (1 − p) log σ(−μ_m)] (+ ½Σ_k τ_k δ_k²) over
    the margins μ_m = u_m·v (+ δ_i − δ_j), from v = 0, δ = 0 (L-BFGS; its iterates stay in the
    span of the data and the penalty, so flat directions stay at 0). Soft labels p ∈ (0, 1)
    keep the minimiser finite.

    ``offsets`` ``(first, second, τ, V)``: δ on the margins, confined to the null space of Vᵀ
    (V ``(K, r)`` orthonormal) by the projector P = I − VVᵀ: δ = Pw over w ∈ ℝᴷ. P is
    applied, never formed (O(K·r) memory and time), so K may be large; L-BFGS from w = 0
    stays in the null space, where P is the identity, so this is the minimiser over δ in it.
    Without ``offsets`` δ is empty."""
    from scipy.optimize import minimize

    u, p, n = design.numpy(), labels.numpy(), count.numpy()
    r = u.shape[1]
    if offsets is not None:
        first, second, tau, basis = (t.numpy() for t in offsets)
        k = basis.shape[0]

        def project(w):
            return w - basis @ (basis.T @ w)
    else:
        k = 0

    def objective(x):
        v, delta = x[:r], (project(x[r:]) if k else None)
        m = u @ v
        if k:
            m = m + delta[first] - delta[second]
        value = float((n * (p * np.logaddexp(0.0, -m) + (1 - p) * np.logaddexp(0.0, m))).sum())
        grad_m = n * (1.0 / (1.0 + np.exp(-m)) - p)
        grad = np.empty_like(x)
        grad[:r] = u.T @ grad_m
        if k:
            value += 0.5 * float((tau * delta * delta).sum())
            grad_delta = tau * delta
            np.add.at(grad_delta, first, grad_m)
            np.add.at(grad_delta, second, -grad_m)
            grad[r:] = project(grad_delta)
        return value, grad

    if r + k == 0:
        return torch.zeros(0, dtype=DTYPE), torch.zeros(0, dtype=DTYPE)
    result = minimize(objective, np.zeros(r + k), jac=True, method="L-BFGS-B",
                      options={"maxiter": 20000, "maxcor": 50, "gtol": 1e-12, "ftol": 0.0})
    v = torch.as_tensor(result.x[:r], dtype=DTYPE)
    delta = torch.as_tensor(project(result.x[r:]) if k else result.x[r:], dtype=DTYPE)
    return v, delta


def components(comparisons: Comparisons) -> torch.Tensor:
    """``(K,)``: a label per response, equal for responses linked by comparisons (the
    connected components of the comparison graph; union–find)."""
    parent = list(range(comparisons.num_responses))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(comparisons.first.tolist(), comparisons.second.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    return torch.tensor([root(a) for a in range(comparisons.num_responses)], dtype=torch.long)


def local_model(coords: torch.Tensor, comparisons: Comparisons, reward: torch.Tensor,
                weights: torch.Tensor, tau: torch.Tensor) -> LocalPrediction:
    """The local model's steps for RLHF, DPO and AuxDPO (module docstring) from score
    coordinates ``coords`` Z ``(r, K)``, the fitted reward, the policy weights D and the
    offsets' prior precisions τ."""
    z = torch.as_tensor(coords, dtype=DTYPE)
    prompt = comparisons.prompt
    reward = torch.as_tensor(reward, dtype=DTYPE)
    weights = torch.as_tensor(weights, dtype=DTYPE)
    zc, rc = centered(z, prompt, weights), centered(reward, prompt, weights)
    root = weights.sqrt()
    y_rlhf = _lstsq((zc * root).T, rc * root)
    i, j = comparisons.first, comparisons.second
    labels = torch.sigmoid(reward[i] - reward[j])            # r̂'s preference on each pair
    diffs = (z[:, i] - z[:, j]).T                                              # (M, r)
    y_dpo, _ = _logistic_fit(diffs, labels, comparisons.count)
    # δ ⟂ the rows of Z·diag(D) (Σ_k D_k δ_k g_k = 0), through the projector onto their null space.
    rows, _ = row_space(z * weights[None, :])                               # (K, rank)
    if rows.shape[1] < comparisons.num_responses:
        y_aux, offsets = _logistic_fit(diffs, labels, comparisons.count,
                                       (i, j, torch.as_tensor(tau, dtype=DTYPE), rows))
    else:                        # no null space: δ = 0 and AuxDPO's problem is DPO's
        y_aux, offsets = y_dpo, torch.zeros(comparisons.num_responses, dtype=DTYPE)
    gain = zc @ (weights * rc)                                                # (r,)
    rlhf_gain = float(gain @ y_rlhf)
    gaps = {name: (float(gain @ y) / rlhf_gain if rlhf_gain > 0 else math.nan)
            for name, y in (("dpo", y_dpo), ("auxdpo", y_aux))}
    norms = float(y_dpo.norm() * y_rlhf.norm())
    cosine = float(y_dpo @ y_rlhf) / norms if norms > 0 else math.nan
    rank = int(torch.linalg.matrix_rank(zc.T)) if zc.numel() else 0
    identified = comparisons.num_responses - int(components(comparisons).unique().numel())
    return LocalPrediction(gaps, cosine, rank, identified, max(0, identified - rank),
                           {"rlhf": y_rlhf, "dpo": y_dpo, "auxdpo": y_aux}, offsets)


def bootstrap_gaps(coords: torch.Tensor, comparisons: Comparisons, weights: torch.Tensor,
                   scale: float | None, half_count: float | None, rounds: int,
                   seed: int = 0, reward_scale: float | None = None) -> dict[str, list[float]]:
    """Predicted gaps over ``rounds`` resamplings of the prompts (with replacement): r̂ refitted
    (a flat Gaussian prior of scale ``reward_scale``, default ``scale``:
    :func:`reward_prior`) and every step recomputed on each resample, the offsets under their
    prior (``scale``, ``half_count``); a prompt drawn m times counts m times."""
    generator = torch.Generator().manual_seed(seed)
    prompts = comparisons.num_prompts
    out: dict[str, list[float]] = {"dpo": [], "auxdpo": []}
    for _ in range(rounds):
        draw = torch.bincount(torch.randint(prompts, (prompts,), generator=generator),
                              minlength=prompts).to(DTYPE)
        keep = draw[comparisons.prompt] > 0                                   # responses
        index = torch.nonzero(keep).flatten()
        new_id = torch.full((comparisons.num_responses,), -1, dtype=torch.long)
        new_id[index] = torch.arange(index.numel())
        pairs = keep[comparisons.first] & keep[comparisons.second]
        _, prompt = torch.unique(comparisons.prompt[index], return_inverse=True)
        sample = Comparisons(prompt, new_id[comparisons.first[pairs]],
                             new_id[comparisons.second[pairs]], comparisons.pref[pairs],
                             comparisons.count[pairs] * draw[comparisons.prompt[
                                 comparisons.first[pairs]]])
        w = weights[index] * draw[comparisons.prompt[index]]
        # A prompt drawn m times is m copies of its rows: its responses fill m times the sides.
        tau = reward_precision(sample, scale, half_count,
                               sample.sides() * draw[comparisons.prompt[index]])
        reward = fit_reward(sample, reward_prior(sample, reward_scale or scale))
        result = local_model(coords[:, index], sample, reward, w / w.sum(), tau)
        for name in out:
            out[name].append(result.predicted_gap[name])
    return out
