"""Population-regime solvers for transformer policies: L-BFGS on the shared loss functions.

An adapter beside the lab's Newton solvers (:mod:`auxdpo.harness.lab.solvers`), which need an exact
Hessian and a reverse-mode Jacobian over all S·A responses and do not scale to a transformer
with d ≈ 10²–10⁴ trainable parameters and |S|·|A| ≈ 10³–10⁴ responses. What is shared:

* every method's per-pair loss is :func:`auxdpo.losses.get_loss` with the lab's pair table
  (:meth:`auxdpo.harness.lab.problems.PreferenceProblem.pair_table`: soft label σ(r*(a) − r*(a')),
  weight n(s,a,a') + n(s,a',a)), summed: paper Eq. 3 (DPO) and Eq. 7 (AuxDPO);
* the geometry (F⁺A_ρ r*, null spaces, rank tolerance) is :mod:`auxdpo.geometry`;
* AuxDPO's constraint set is the lab's: δ ∈ N(A_ρ,θ₀) ∩ {Σ_a δ(s, a) = 0 for every s}.

What differs: the score matrix A comes from forward-mode autodiff (``torch.func.jacfwd``, d
passes instead of S·A); δ is parametrised as δ = Π(c ⊙ h^{-1/2}) with Π the orthogonal
projector onto that null space (a thin SVD of its (d + S) constraint rows; the same set as the
lab's basis Γ, without its S·A × S·A matrix) and h the loss's diagonal δ-curvature at 0 (a
preconditioner: it does not change the set of reachable δ); θ = θ₀ + φ/β, so that φ is O(1) at
every β (it does not change the minimiser). The ``global`` mode replaces the projection by
the population penalty λ‖A_ρ δ‖² (the trainer's global penalty with every response counted
with its weight ρ·π₀). The L-BFGS driver and its preconditioners: :mod:`auxdpo.harness.oracle.lbfgs`.
"""

from __future__ import annotations

from typing import Callable

import torch

from auxdpo.geometry import base_weights, fisher_matrix, local_rlhf_step, row_space, unit_rows
from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.lbfgs import (
    DTYPE,
    Fit,
    inverse_root,
    lbfgs,
    lbfgs_rounds,
    reward_metric,
    theta_root,
)
from auxdpo.losses import get_loss

__all__ = [
    "AUX_MODES",
    "Fit",
    "NullProjector",
    "fit_auxdpo_relinearised",
    "fit_method",
    "fit_rlhf",
    "forward_score_matrix",
    "local_rlhf_theta",
    "pair_loss_closure",
    "rlhf_objective",
    "theta_root",
]

AUX_MODES = ("projection", "global")
LogProbs = Callable[[torch.Tensor], torch.Tensor]


def forward_score_matrix(log_probs: LogProbs, theta0: torch.Tensor,
                         chunk_size: int | None = 8) -> torch.Tensor:
    """A_θ₀ ``(d, S·A)``: ∇_θ log π_θ₀(a|s) per column, by forward-mode autodiff.

    ``chunk_size`` directions share one vmapped pass. Small chunks keep the batched tangents
    in cache: on the tokens task's LoRA capacities 8 was 1.8–1.9× faster than 64
    (docs/benchmarks.md, "Oracle")."""
    theta0 = theta0.detach()
    d = theta0.numel()
    step = d if chunk_size is None else chunk_size

    def directional(tangent):
        return torch.func.jvp(log_probs, (theta0,), (tangent,))[1].reshape(-1)

    eye = torch.eye(d, dtype=theta0.dtype)
    rows = [torch.vmap(directional)(eye[i:i + step]) for i in range(0, d, step)]
    return torch.cat(rows)                                       # (d, S·A)


def local_rlhf_theta(A: torch.Tensor, rho: torch.Tensor, log_probs0: torch.Tensor,
                     reward: torch.Tensor, beta: float, theta0: torch.Tensor) -> torch.Tensor:
    """θ₀ + (1/β)F⁺A_ρ r* (paper Eq. 5), via :func:`auxdpo.geometry.local_rlhf_step`."""
    weights = base_weights(rho, log_probs0)
    return local_rlhf_step(A, weights, reward.reshape(-1), beta, theta0)


class NullProjector:
    """Π, the orthogonal projector onto N(A_ρ,θ₀) ∩ {per-state sums 0} ⊂ R^{S·A}.

    Rows are rescaled to unit norm before the SVD (numerically zero rows stay zero), as in the
    lab's offset basis, so the rank tolerance (max(rows, cols)·ε·σ_max) treats both blocks alike;
    the row space comes from :func:`auxdpo.geometry.row_space` (the one null-space SVD).

    ``support`` ``(S·A,)`` bool (finite samples: the responses seen in the data) restricts δ to
    those entries, zero elsewhere: Π projects onto {δ: δ = 0 off the support} ∩ N(A_ρ) ∩ {per
    -state sums over the support 0}, with ``weights`` the constraint's column weights.
    """

    def __init__(self, A: torch.Tensor, weights: torch.Tensor, num_states: int,
                 support: torch.Tensor | None = None):
        m = weights.numel()
        num_actions = m // num_states
        self.columns = None if support is None else torch.nonzero(support).flatten()
        A_rho = A * weights[None, :]
        if self.columns is None:
            state_sums = torch.kron(torch.eye(num_states, dtype=DTYPE),
                                    torch.ones(1, num_actions, dtype=DTYPE)) / num_actions ** 0.5
        else:
            A_rho = A_rho[:, self.columns]
            state_of = self.columns // num_actions
            state_sums = torch.nn.functional.one_hot(state_of, num_states).T.to(DTYPE)
            state_sums = state_sums / state_sums.sum(1, keepdim=True).clamp_min(1).sqrt()
        rows = torch.cat([unit_rows(A_rho), state_sums])
        basis, self.rank = row_space(rows)                     # (K, rank), orthonormal columns
        self.row_space = basis
        self.size = m
        self.null_dim = rows.shape[1] - self.rank

    def __call__(self, c: torch.Tensor) -> torch.Tensor:
        if self.columns is None:
            return c - self.row_space @ (self.row_space.T @ c)     # δ ∈ N(A_ρ): paper Sec. 4.2
        sub = c.index_select(0, self.columns)
        sub = sub - self.row_space @ (self.row_space.T @ sub)
        return c.new_zeros(self.size).index_copy(0, self.columns, sub)


def pair_loss_closure(method: str, log_probs: LogProbs, problem: PreferenceProblem,
                      theta0: torch.Tensor, *, dpop_lambda: float = 50.0,
                      ipo_length: int = 1) -> Callable[..., torch.Tensor]:
    """(θ, δ or None) ↦ Σ_pairs n·soft loss of ``method`` (Eq. 3 / Eq. 7), a scalar.

    IPO scores mean token log-probs (sequence log-prob / ``ipo_length``), the others sums.
    """
    loss_fn = get_loss(method)
    table = problem.pair_table()
    s, a, b = table.state, table.first, table.second
    S, nA = problem.num_states, problem.num_actions
    scale = 1.0 / ipo_length if method == "ipo" else 1.0
    # Flat (s, a) indices and index_select: its backward is an index_add, several times
    # cheaper than the accumulating index_put of logp[s, a] on 10⁵–10⁶ pairs.
    first, second = s * nA + a, s * nA + b
    with torch.no_grad():
        ref = (log_probs(theta0)[:S] * scale).reshape(-1)
    ref_first, ref_second = ref[first], ref[second]
    extra = {"dpop_lambda": float(dpop_lambda)} if method == "dpop" else {}

    def loss(theta: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        logp = (log_probs(theta)[:S] * scale).reshape(-1)
        kw = dict(extra)
        if delta is not None:
            kw.update(delta_chosen=delta.index_select(0, first),
                      delta_rejected=delta.index_select(0, second))
        out = loss_fn(logp.index_select(0, first), logp.index_select(0, second), ref_first,
                      ref_second, beta=problem.beta, pref_prob=table.pref_prob,
                      weight=table.weight, **kw)
        return out.losses.sum()  # Eq. 3 (DPO) / Eq. 7 (AuxDPO): Σ n·soft per-pair loss

    loss.table = table
    return loss


def fit_method(method: str, log_probs: LogProbs, problem: PreferenceProblem,
               theta0: torch.Tensor, *, A: torch.Tensor, mode: str = "projection",
               lambda_null: float = 1e4, dpop_lambda: float = 50.0, ipo_length: int = 1,
               max_iter: int = 300, floor: float = 1e-9, restarts: int = 1,
               restart_floor: float | None = None,
               constraint_at: torch.Tensor | None = None,
               null_weights: torch.Tensor | None = None,
               support: torch.Tensor | None = None,
               delta_prior: float | torch.Tensor = 0.0) -> Fit:
    """Minimiser of ``method``'s population loss (AuxDPO: jointly with δ), from θ₀ (δ = 0).

    ``A`` ``(d, S·A)`` is the score matrix at θ₀ (the constraint of AuxDPO; for every method
    it also builds the preconditioner φ = G^{-1/2}ψ, G = A·H_r·Aᵀ; ``floor`` is the relative
    eigenvalue floor of every preconditioner: raise it, e.g. to 1e-3, when A has near-flat
    directions, as LoRA does at V = 0). ``restarts`` > 1 runs that many rounds of ``max_iter``
    iterations; each later round rebuilds G from the score matrix at the current θ and starts
    there (LoRA: the curvature at V = 0 is a poor guide once V has grown), with eigenvalue
    floor ``restart_floor`` (default ``floor``). AuxDPO's constraint uses the score matrix and
    the weights ρ·π at θ₀ (paper Eq. 7), or at ``constraint_at`` when given (see
    :func:`fit_auxdpo_relinearised`). ``null_weights`` ``(S·A,)`` replace ρ·π as the
    constraint's column weights and ``support`` ``(S·A,)`` bool restricts δ to those entries
    (the finite-sample, response-keyed AuxDPO of :mod:`auxdpo.harness.oracle.fullbatch`).
    ``delta_prior`` λ adds the Gaussian prior (λ/2)‖δ‖² on the offsets (finite samples:
    λ = τ/n, τ = 1/σ², the trainer's ``aux_delta_scale`` σ; docs/finite_sample.md), or
    Σ_k (λ_k/2)δ_k² for a tensor ``(S·A,)``; it also enters δ's preconditioner, without
    which the per-prompt constants make L-BFGS stall.
    """
    beta, d, S = problem.beta, theta0.numel(), problem.num_states
    loss = pair_loss_closure(method, log_probs, problem, theta0, dpop_lambda=dpop_lambda,
                             ipo_length=ipo_length)
    laplacian = reward_metric(problem)                                      # (S, A, A)
    nA = problem.num_actions

    def param_root_at(score, floor=floor):
        return theta_root(score, laplacian, floor)

    frame = {"centre": theta0, "root": param_root_at(A)}

    def theta_of(psi):
        return frame["centre"] + (frame["root"] @ psi) / beta             # θ = θ_c + φ/β

    def recentre(x):
        centre = theta_of(x[:d]).detach()
        frame["centre"], frame["root"] = centre, param_root_at(
            forward_score_matrix(log_probs, centre),
            floor if restart_floor is None else restart_floor)
        return torch.cat([torch.zeros(d, dtype=DTYPE), x[d:]])

    if method != "auxdpo":
        x, value, its, gnorm, capped = lbfgs_rounds(lambda x: loss(theta_of(x)),
                                               torch.zeros(d, dtype=DTYPE), max_iter,
                                               restarts, recentre)
        return Fit(method, theta_of(x), value, its, gnorm, capped=capped)
    if mode not in AUX_MODES:
        raise ValueError(f"AuxDPO mode must be one of {AUX_MODES}, got {mode!r}")
    at = theta0 if constraint_at is None else constraint_at.detach()
    A_at = A if constraint_at is None else forward_score_matrix(log_probs, at)
    if null_weights is None:
        with torch.no_grad():
            weights = base_weights(problem.rho, log_probs(at)[:S])
    else:
        weights = null_weights.to(DTYPE)
    curvature, has_prior = laplacian, bool(torch.any(torch.as_tensor(delta_prior) != 0))
    if has_prior:
        on = torch.ones(S * nA, dtype=DTYPE) if support is None else support.to(DTYPE)
        curvature = laplacian + torch.diag_embed((delta_prior * on).view(S, nA))
    delta_root = inverse_root(curvature, floor)                                 # (S, A, A)
    project = NullProjector(A_at, weights, S, support) if mode == "projection" else None
    A_rho = A_at * weights[None, :]
    mask = None if support is None else support.to(DTYPE)

    def delta_of(c):
        raw = (delta_root @ c.view(S, nA, 1)).reshape(-1)
        if project is not None:
            return project(raw)
        return raw if mask is None else raw * mask

    def objective(x):
        delta = delta_of(x[d:])
        value = loss(theta_of(x[:d]), delta)
        if project is None:
            value = value + lambda_null * (A_rho @ delta).pow(2).sum()   # λ‖A_ρδ‖²
        if has_prior:
            value = value + 0.5 * (delta_prior * delta.pow(2)).sum()   # (τ/2n)Σ_k δ_k²
        return value

    x0 = torch.zeros(d + S * nA, dtype=DTYPE)
    x, value, its, gnorm, capped = lbfgs_rounds(objective, x0, max_iter, restarts, recentre)
    return Fit(f"auxdpo-{mode}", theta_of(x[:d]), value, its, gnorm,
               delta=delta_of(x[d:]).detach(), capped=capped)


def fit_auxdpo_relinearised(log_probs: LogProbs, problem: PreferenceProblem,
                            theta0: torch.Tensor, *, A: torch.Tensor, rounds: int,
                            **solver) -> Fit:
    """AuxDPO re-solved with its null space taken where its last solve ended.

    Round 1 is AuxDPO (δ ∈ N(A_ρ,θ₀)); round k + 1 solves the same loss from θ₀ with
    δ ∈ N(A_ρ,θ_k), θ_k round k's answer. A fixed point θ̄ where the loss reaches its floor
    (r_θ̄ + δ̄ = r*, per-prompt constants aside) is a stationary point of the exact RLHF
    objective: ∇J(θ̄) = A_ρ,θ̄ (r* − r_θ̄) = A_ρ,θ̄ δ̄ = 0. With θ₀'s null space, as in the paper,
    the minimiser solves A_ρ,θ₀ (r* − r_θ) = 0 instead, whose linearisation in θ is the local
    solution of Eq. 5 (docs/oracle.md, "Relinearised AuxDPO"). ``solver`` goes to
    :func:`fit_method` (projection mode). The answer carries every round's θ in ``path`` and
    the iterations of all rounds.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    path, its, at, capped = [], 0, None, False
    for _ in range(rounds):
        fit = fit_method("auxdpo", log_probs, problem, theta0, A=A, mode="projection",
                         constraint_at=at, **solver)
        its += fit.iterations
        capped = capped or fit.capped
        at = fit.theta.detach()
        path.append(at)
    return Fit("auxdpo-relin", fit.theta, fit.objective, its, fit.grad_norm, delta=fit.delta,
               path=path, capped=capped)


def rlhf_objective(log_probs: torch.Tensor, log_probs0: torch.Tensor, reward: torch.Tensor,
                   rho: torch.Tensor, beta: float) -> torch.Tensor:
    """J(θ; r*) = Σ_s ρ(s) Σ_a π_θ(a|s)[r* − β log π_θ/π₀] (paper Eq. 1), from ``(S, A)``."""
    per_state = (log_probs.exp() * (reward - beta * (log_probs - log_probs0))).sum(dim=1)
    return (rho * per_state).sum()  # Eq. 1


def fit_rlhf(log_probs: LogProbs, problem: PreferenceProblem, theta0: torch.Tensor, *,
             A: torch.Tensor, starts: list[torch.Tensor], max_iter: int = 300,
             floor: float = 1e-9, restarts: int = 1, restart_floor: float | None = None
             ) -> Fit:
    """argmax_θ J(θ; r*) by L-BFGS on β·(J₀ − J(θ₀ + φ/β)) from each start; the best wins.

    Preconditioned by the Fisher matrix at θ₀: φ = F^{-1/2}ψ (F = A D Aᵀ, the Hessian of
    β·(J₀ − J) in φ at θ₀ up to O(1/β)). ``restarts`` > 1: the best start's solve continues
    for that many rounds in all, each later round centred at the current θ and preconditioned
    by the Fisher matrix there (see :func:`fit_method`).
    """
    beta, S = problem.beta, problem.num_states
    with torch.no_grad():
        logp0 = log_probs(theta0)[:S]
    base = rlhf_objective(logp0, logp0, problem.reward, problem.rho, beta)
    frame = {"centre": theta0,
             "root": inverse_root(fisher_matrix(A, base_weights(problem.rho, logp0)), floor)}

    def theta_of(psi):
        return frame["centre"] + (frame["root"] @ psi) / beta

    def objective(psi):
        logp = log_probs(theta_of(psi))[:S]
        return beta * (base - rlhf_objective(logp, logp0, problem.reward, problem.rho, beta))

    best = None
    for start in starts:
        # gelsd (SVD): the default gelsy driver is not bit-reproducible from call to call.
        psi0 = torch.linalg.lstsq(frame["root"], beta * (start - theta0)[:, None],
                                 driver="gelsd").solution[:, 0]
        fit = lbfgs(objective, psi0, max_iter)
        if best is None or fit[1] < best[1]:
            best = fit
    psi, value, its, gnorm, capped = best

    def recentre(psi):
        centre = theta_of(psi).detach()
        with torch.no_grad():
            logp = log_probs(centre)[:S]
        score = forward_score_matrix(log_probs, centre)
        frame["centre"] = centre
        frame["root"] = inverse_root(fisher_matrix(score, base_weights(problem.rho, logp)),
                                      floor if restart_floor is None else restart_floor)
        return torch.zeros_like(psi)

    if restarts > 1:
        psi, value, more, gnorm, capped = lbfgs_rounds(objective, recentre(psi), max_iter,
                                                  restarts - 1, recentre)
        its += more
    return Fit("rlhf", theta_of(psi), float(base) - value / beta, its, gnorm, capped=capped)
