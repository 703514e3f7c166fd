"""Exact minimisers of each method's population loss, and of RLHF's objective.

Every preference method is scored through :mod:`auxdpo.losses`: the population loss is the
sum over pairs of the per-pair loss with ``pref_prob`` = σ(r*(s,a) − r*(s,a')) and ``weight`` =
n(s,a,a') (paper Eq. 3 for DPO, Eq. 7 for AuxDPO). AuxDPO's offsets are δ = Γc with Γ an
orthonormal basis of N(A_ρ,θ₀) ∩ {Σ_a δ(s,a) = 0 for every s}: per-state constants lie in
N(A_ρ,θ₀) but no pair can see them, so dropping them removes only exactly-flat directions.

Solver choices: Newton with the exact Hessian (:func:`auxdpo.harness.lab.newton.newton_minimize`)
from θ₀ (and c = 0). For log-linear classes DPO, IPO and AuxDPO are convex (margins are linear
in (θ, c)) and so is DPOP (−log σ is convex and non-increasing, the DPOP margin is concave);
DPOP is not smooth (its hinge) and RLHF's J is not concave in θ in general, so both are
solved from two starts (θ₀ and DPO's / the local RLHF solution) keeping the better one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from auxdpo.geometry import (
    base_weights,
    local_rlhf_step,
    null_space_basis,
    score_matrix,
    unit_rows,
)
from auxdpo.harness.lab.newton import newton_minimize
from auxdpo.harness.lab.objectives import PairLossObjective, RLHFObjective
from auxdpo.harness.lab.policies import DTYPE, Policy
from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.losses import PAPER_METHODS, get_loss

__all__ = [
    "METHODS",
    "Solution",
    "auxdpo_offset_basis",
    "dpop_base_residual",
    "expected_reward",
    "population_loss",
    "rlhf_objective",
    "solve",
    "solve_all",
    "solve_rlhf",
    "solve_rlhf_local",
]

METHODS = PAPER_METHODS


@dataclass
class Solution:
    """A solver's answer. ``delta`` ``(S·A,)`` is AuxDPO's offset (reward units), else None."""

    method: str
    theta: torch.Tensor
    objective: float          # population loss at θ (for "rlhf": J(θ), Eq. 1)
    status: str  # "converged" | "stalled" | "max_iter" | "closed_form" | "certified" (DPOP at θ₀)
    iterations: int = 0
    delta: torch.Tensor | None = None


def auxdpo_offset_basis(policy: Policy, problem: PreferenceProblem,
                        rtol: float | None = None) -> torch.Tensor:
    """Γ ``(S·A, k)``, orthonormal, A_ρ,θ₀·Γ = 0 and every column sums to 0 within each state."""
    A = score_matrix(policy.log_probs, policy.theta0)
    weights = base_weights(problem.rho, policy.log_probs(policy.theta0))
    S, nA = problem.num_states, problem.num_actions
    state_sums = torch.kron(torch.eye(S, dtype=DTYPE), torch.ones(1, nA, dtype=DTYPE))
    # Rows rescaled to unit norm (zero rows stay zero): the rank tolerance treats both alike.
    A_rho = A * weights[None, :]
    rows = torch.cat([unit_rows(A_rho), state_sums / nA ** 0.5])
    return null_space_basis(rows, rtol)


def population_loss(method: str, policy: Policy, problem: PreferenceProblem,
                    theta: torch.Tensor, *, delta: torch.Tensor | None = None,
                    dpop_lambda: float = 50.0) -> torch.Tensor:
    """Population loss of ``method`` at θ ``(d,)`` (and δ ``(S·A,)`` for AuxDPO), a scalar."""
    m = problem.num_states * problem.num_actions
    if method == "auxdpo":
        delta = torch.zeros(m, dtype=DTYPE) if delta is None else delta
        if delta.shape != (m,):
            raise ValueError(f"delta has shape {tuple(delta.shape)}, expected ({m},)")
        objective = PairLossObjective(method, policy, problem, basis=torch.eye(m, dtype=DTYPE))
        return objective.value(torch.cat([theta, delta]))
    objective = PairLossObjective(method, policy, problem, dpop_lambda=dpop_lambda)
    return objective.value(theta)


def solve(method: str, policy: Policy, problem: PreferenceProblem, *,
          dpop_lambda: float = 50.0, rtol: float | None = None,
          start: torch.Tensor | None = None, dpo_start: torch.Tensor | None = None
          ) -> Solution:
    """Minimiser of ``method``'s population loss over θ (and δ ∈ N(A_ρ,θ₀) for AuxDPO).

    ``start`` replaces θ₀ as the starting point; DPOP also starts from ``dpo_start`` (by
    default DPO's minimiser) and keeps the better of its two runs.
    """
    problem.check_policy(policy)
    get_loss(method)  # unknown names fail here, with the list of known ones
    theta_start = policy.theta0 if start is None else start
    if method == "dpop":
        objective = PairLossObjective(method, policy, problem, dpop_lambda=dpop_lambda)
        if start is None and dpop_base_residual(policy, problem, dpop_lambda) <= 1e-9:
            value = float(objective.value(policy.theta0))
            return Solution(method, policy.theta0.clone(), value, "certified")
        dpo_theta = solve("dpo", policy, problem, start=start).theta if dpo_start is None \
            else dpo_start
        starts = [theta_start, dpo_theta]
        runs = [newton_minimize(objective, x0) for x0 in starts]
        best = min(runs, key=lambda r: r.value)
        return Solution(method, best.x, best.value, best.status,
                        sum(r.iterations for r in runs))
    if method != "auxdpo":
        res = newton_minimize(PairLossObjective(method, policy, problem), theta_start)
        return Solution(method, res.x, res.value, res.status, res.iterations)
    basis = auxdpo_offset_basis(policy, problem, rtol)
    objective = PairLossObjective(method, policy, problem, basis=basis)
    res = newton_minimize(objective, torch.cat([theta_start,
                                                torch.zeros(basis.shape[1], dtype=DTYPE)]))
    theta, delta = objective.split(res.x)
    return Solution(method, theta, res.value, res.status, res.iterations, delta=delta)


def dpop_base_residual(policy: Policy, problem: PreferenceProblem,
                       dpop_lambda: float = 50.0) -> float:
    """How far θ₀ is from stationarity for DPOP (0 ⇔ θ₀ is a stationary point).

    At θ₀ every hinge max(0, log π_ref(a_w) − log π(a_w)) sits at its kink, and the one-sided
    derivative along v is g·v + Σ_(s,a) c(s,a)·max(0, −score(s,a)·v), with g the DPO gradient
    at θ₀ and c(s,a) = (βλ/2)·(total soft weight of the pairs that (s,a) wins). So 0 lies in
    the subdifferential iff g = Σ c·t·score for some t ∈ [0, 1]^m: a linear program, solved
    here as min ‖Σ c·t·score − g‖₁. Returns that minimum relative to 1 + ‖g‖₁. For
    log-linear classes DPOP is convex, so a zero residual certifies θ₀ as its minimiser.
    """
    from scipy.optimize import linprog

    table = problem.pair_table()
    nA, m = problem.num_actions, problem.num_states * problem.num_actions
    theta0 = policy.theta0.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(population_loss("dpo", policy, problem, theta0), theta0)
    wins = torch.zeros(m, dtype=DTYPE)
    wins.index_add_(0, table.state * nA + table.first, table.weight * table.pref_prob)
    wins.index_add_(0, table.state * nA + table.second, table.weight * (1 - table.pref_prob))
    scaled = policy.score(policy.theta0).T * (problem.beta * dpop_lambda / 2 * wins)  # (d, m)
    d = scaled.shape[0]
    eye = torch.eye(d, dtype=DTYPE)
    cost = torch.cat([torch.zeros(m, dtype=DTYPE), torch.ones(2 * d, dtype=DTYPE)])
    res = linprog(cost.numpy(), A_eq=torch.cat([scaled, eye, -eye], 1).numpy(),
                  b_eq=grad.numpy(), bounds=[(0, 1)] * m + [(0, None)] * (2 * d),
                  method="highs")
    if res.status != 0:
        return float("inf")
    return float(res.fun) / (1.0 + float(grad.abs().sum()))


def rlhf_objective(policy: Policy, problem: PreferenceProblem,
                   theta: torch.Tensor) -> torch.Tensor:
    """J(θ; r*) = E_ρ,π_θ[r* − β log π_θ/π_θ₀] (paper Eq. 1), a scalar."""
    logp = policy.log_probs(theta)
    ref = policy.log_probs(policy.theta0).detach()
    per_state = (logp.exp() * (problem.reward - problem.beta * (logp - ref))).sum(dim=1)
    return (problem.rho * per_state).sum()  # Eq. 1


def expected_reward(policy: Policy, problem: PreferenceProblem,
                    theta: torch.Tensor) -> float:
    """E_ρ,π_θ[r*(s, a)] (no KL term)."""
    probs = policy.probs(theta).detach()
    return float((problem.rho * (probs * problem.reward).sum(dim=1)).sum())


def solve_rlhf_local(policy: Policy, problem: PreferenceProblem,
                     rtol: float | None = None) -> Solution:
    """θ₀ + (1/β)·F⁺·A_ρ,θ₀·r* (paper Eq. 5), the maximiser of J's local quadratic model."""
    problem.check_policy(policy)
    A = score_matrix(policy.log_probs, policy.theta0)
    weights = base_weights(problem.rho, policy.log_probs(policy.theta0))
    theta = local_rlhf_step(A, weights, problem.reward, problem.beta, policy.theta0, rtol)
    return Solution("rlhf_local", theta, float(rlhf_objective(policy, problem, theta)),
                    "closed_form")


def solve_rlhf(policy: Policy, problem: PreferenceProblem) -> Solution:
    """argmax_θ J(θ; r*) (Eq. 1), by Newton from θ₀ and from the local solution (Eq. 5)."""
    objective = RLHFObjective(policy, problem)
    starts = [policy.theta0, solve_rlhf_local(policy, problem).theta]
    runs = [newton_minimize(objective, x0) for x0 in starts]
    best = min(runs, key=lambda r: r.value)
    return Solution("rlhf", best.x, -best.value, best.status, sum(r.iterations for r in runs))


def solve_all(policy: Policy, problem: PreferenceProblem, *, dpop_lambda: float = 50.0,
              methods=METHODS) -> dict[str, Solution]:
    """Base, every method in ``methods``, exact RLHF and local RLHF, keyed by name."""
    base = Solution("base", policy.theta0.clone(),
                    float(rlhf_objective(policy, problem, policy.theta0)), "closed_form")
    out = {"base": base}
    for method in methods:
        dpo_start = out["dpo"].theta if "dpo" in out else None
        out[method] = solve(method, policy, problem, dpop_lambda=dpop_lambda,
                            dpo_start=dpo_start)
    out["rlhf"] = solve_rlhf(policy, problem)
    out["rlhf_local"] = solve_rlhf_local(policy, problem)
    return out
