"""Exact minimisers of the finite-sample empirical objectives: the ``full-batch`` finite solver.

n labelled pairs (s, a_w, a_l) define each method's empirical loss (1/n)Σ_i ℓ_i. Pairs that
repeat fold into one soft pair: the unordered pair {a, a'} of prompt s drawn n(s,a,a') times,
a winning in a share p̂ of them, contributes n(s,a,a')/n·[p̂·ℓ(a≻a') + (1 − p̂)·ℓ(a'≻a)] —
the population loss's form with empirical counts and labels (:class:`EmpiricalProblem`), so
DPO, IPO, DPOP and response-keyed AuxDPO are solved by the population solvers
(:func:`auxdpo.harness.oracle.solvers.fit_method`) on a problem of size |S|·|A|, whatever n.

AuxDPO's offsets, as the trainer keys them (``aux_offsets``, docs/offsets.md):

* ``response``: one δ per (prompt, response) seen in the data, zero elsewhere, under the
  empirical constraint Σ_k ω_k δ_k ∇log π₀(a_k|s_k) = 0, ω the weighting
  (:data:`NULL_WEIGHTS`, :func:`response_weights`); per-prompt constants, which no comparison
  sees, are fixed by zero per-prompt sums over the seen responses.
* ``row``: one δ per occurrence, 2n of them (:func:`fit_auxdpo_rows`), under the same
  constraint over occurrences. Its loss has no minimiser once n > d: the constraint's d
  equations leave 2n − d free offsets, enough to fit every row's hard label exactly with
  δ → ∞, so θ is whatever the optimiser's path leaves (docs/offsets.md, "Keying").

Reference rows known only to the oracle: importance-weighted DPO (``iw-dpo``), whose pair
weights q_on/q_sample turn the sample into an estimate of the on-policy DPO loss (its
effective sample size is reported as ``ess``).
"""

from __future__ import annotations

import math
import time

import torch

from auxdpo.geometry import row_space, unit_rows
from auxdpo.harness.lab.problems import PairTable, PreferenceProblem
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup, exact_rlhf, method_variants
from auxdpo.harness.oracle.designs import design_counts, disagreeing_pairs
from auxdpo.harness.oracle.lbfgs import DTYPE, Fit, lbfgs, reward_metric, theta_root
from auxdpo.harness.oracle.metrics import policy_metrics
from auxdpo.harness.oracle.reward_model import fit_reward_table
from auxdpo.harness.oracle.sampling import NULL_WEIGHTS, PairSample, sample_groups, sample_pairs
from auxdpo.harness.oracle.solvers import fit_method
from auxdpo.losses import get_loss

__all__ = ["EmpiricalProblem", "empirical_problem", "fit_auxdpo_rows", "fullbatch_cell",
           "importance_weights", "occurrences", "response_weights"]


class EmpiricalProblem(PreferenceProblem):
    """A :class:`PreferenceProblem` whose pair labels are the sample's win shares.

    ``counts`` holds the (weighted) wins: counts[s, a, a'] = how often a beat a' at s, scaled
    to sum to 1. ``reward`` is only the solvers' preconditioner (:func:`reward_metric`): zero
    here, so that no estimator sees r*.
    """

    def pair_table(self) -> PairTable:
        A = self.num_actions
        folded = self.counts + self.counts.transpose(1, 2)
        upper = torch.triu(torch.ones(A, A, dtype=torch.bool), diagonal=1)
        s, a, b = torch.nonzero(upper[None] & (folded > 0), as_tuple=True)
        weight = folded[s, a, b]
        return PairTable(s, a, b, weight, self.counts[s, a, b] / weight)    # p̂(a ≻ a')


def empirical_problem(sample: PairSample, rho: torch.Tensor, num_actions: int, beta: float,
                      row_weight: torch.Tensor | None = None) -> EmpiricalProblem:
    """The sample's folded empirical loss as a problem (``row_weight`` ``(n,)``: IW-DPO)."""
    S = rho.numel()
    weight = torch.ones(len(sample), dtype=DTYPE) if row_weight is None else row_weight
    base = sample.state * num_actions
    flat = (base + sample.chosen) * num_actions + sample.rejected
    wins = torch.zeros(S * num_actions * num_actions, dtype=DTYPE)
    if sample.pref is None:
        wins.index_add_(0, flat, weight)
    else:                                   # soft labels: the loser wins a share 1 − p
        back = (base + sample.rejected) * num_actions + sample.chosen
        wins.index_add_(0, flat, weight * sample.pref)
        wins.index_add_(0, back, weight * (1 - sample.pref))
    wins = wins.view(S, num_actions, num_actions) / weight.sum()
    return EmpiricalProblem(rho, torch.zeros(S, num_actions, dtype=DTYPE), wins, beta)


def occurrences(sample: PairSample, num_states: int, num_actions: int) -> torch.Tensor:
    """c ``(S·A,)``: how many pair sides each (prompt, response) fills in the sample."""
    m = num_states * num_actions
    sides = torch.cat([sample.state * num_actions + sample.chosen,
                       sample.state * num_actions + sample.rejected])
    return torch.bincount(sides, minlength=m).to(DTYPE)


def response_weights(sample: PairSample, log_probs0: torch.Tensor, kind: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """ω ``(S·A,)`` (sums to 1) and the support (seen responses) of the empirical constraint.

    multiplicity  ω ∝ c, the occurrence counts: the paper's Monte Carlo sum over rows
                  (Sec. 4.2). It estimates E_{ρ,π₀}[δ∇log π₀] only when prompts come from ρ
                  and responses from π₀; otherwise it tends to the constraint under the
                  data's own (prompt, response) marginal;
    reference     ω ∝ π₀(a|s) on the seen responses, every prompt of the data counted once
                  (ρ̂ uniform over the data's prompts), δ extended by zero outside the data;
    prompt        ω ∝ π₀(a|s)/Σ_{seen a'} π₀(a'|s): self-normalised per prompt, every prompt
                  of the data counted once.
    With every response seen, reference and prompt are the population constraint N(A_ρ,θ₀)
    of a uniform ρ over the data's prompts, whatever distribution the pairs came from.
    """
    if kind not in NULL_WEIGHTS:
        raise ValueError(f"null weights must be one of {NULL_WEIGHTS}, got {kind!r}")
    S, nA = log_probs0.shape
    count = occurrences(sample, S, nA)
    support = count > 0
    if kind == "multiplicity":
        omega = count
    else:
        probs = log_probs0.detach().to(DTYPE).exp() * support.view(S, nA)
        if kind == "prompt":
            probs = probs / probs.sum(1, keepdim=True).clamp_min(torch.finfo(DTYPE).tiny)
        omega = probs.reshape(-1)
    return omega / omega.sum(), support


def importance_weights(sample: PairSample, target: torch.Tensor, behaviour: torch.Tensor
                       ) -> tuple[torch.Tensor, float]:
    """Per-row w = q_target/q_behaviour of the unordered pair, and the effective sample size
    (Σw)²/Σw². ``target``, ``behaviour``: ``(S, A, A)`` pair distributions (any scale)."""
    t = target + target.transpose(1, 2)
    b = behaviour + behaviour.transpose(1, 2)
    t, b = t / t.sum(), b / b.sum()
    s, w, l = sample.state, sample.chosen, sample.rejected
    weight = t[s, w, l] / b[s, w, l]
    return weight, float(weight.sum() ** 2 / weight.pow(2).sum())


def fit_auxdpo_rows(log_probs, problem: EmpiricalProblem, sample: PairSample,
                    theta0: torch.Tensor, *, A: torch.Tensor, omega: torch.Tensor,
                    mode: str = "projection", lambda_null: float = 1e4, max_iter: int = 300,
                    floor: float = 1e-9, delta_prior: float = 0.0) -> Fit:
    """Row-keyed AuxDPO on the sample: δ ∈ R^{2n}, one offset per pair side, under the
    constraint Σ_occurrences f·δ·∇log π₀ = 0 with f = ω/c (so the occurrences of a response
    weigh ω in all), exact (``projection``) or as the penalty λ‖Mδ‖² (``global``);
    ``delta_prior`` λ adds (λ/2)‖δ‖² (a Gaussian prior on every offset).

    Preconditioned like :func:`auxdpo.harness.oracle.solvers.fit_method`: θ = θ₀ + G^{-1/2}ψ/β, and
    δ = 2√n·c (each offset's curvature in the mean loss is σ'/n ≈ 1/(4n)).
    """
    beta, S, nA = problem.beta, problem.num_states, problem.num_actions
    n = len(sample)
    w_idx = sample.state * nA + sample.chosen
    l_idx = sample.state * nA + sample.rejected
    idx = torch.stack([w_idx, l_idx], 1).reshape(-1)             # (δ_{0,w}, δ_{0,l}, ...)
    count = occurrences(sample, S, nA)
    M = A.index_select(1, idx) * (omega / count.clamp_min(1))[idx][None, :]   # (d, 2n)
    root = theta_root(A, reward_metric(problem), floor)
    loss_fn = get_loss("auxdpo")
    with torch.no_grad():
        ref = log_probs(theta0)[:S].reshape(-1)
    ref_w, ref_l = ref[w_idx], ref[l_idx]
    if mode == "projection":
        basis, _ = row_space(unit_rows(M))                      # row space of M, (2n, r)

        def delta_of(c):
            return c - basis @ (basis.T @ c)
    elif mode == "global":
        def delta_of(c):
            return c
    else:
        raise ValueError(f"row-keyed AuxDPO: mode must be projection or global, got {mode!r}")
    d, scale = theta0.numel(), 2.0 * math.sqrt(n)

    def unpack(x):
        return theta0 + (root @ x[:d]) / beta, delta_of(scale * x[d:])

    def objective(x):
        theta, delta = unpack(x)
        logp = log_probs(theta)[:S].reshape(-1)
        out = loss_fn(logp.index_select(0, w_idx), logp.index_select(0, l_idx), ref_w, ref_l,
                      beta=beta, delta_chosen=delta[0::2], delta_rejected=delta[1::2])
        value = out.losses.mean()                                # (1/n)Σ_i ℓ_i
        if mode == "global":
            value = value + lambda_null * (M @ delta).pow(2).sum()
        if delta_prior:
            value = value + 0.5 * delta_prior * delta.pow(2).sum()   # (τ/2n)Σ δ², 2n offsets
        return value

    x, value, its, gnorm, capped = lbfgs(objective, torch.zeros(d + 2 * n, dtype=DTYPE),
                                          max_iter)
    theta, delta = unpack(x)
    return Fit(f"auxdpo-row-{mode}", theta.detach(), value, its, gnorm, delta=delta.detach(),
               capped=capped)


def _draw(config, cell: dict, reward: torch.Tensor):
    """(draw(n, generator) → PairSample, behaviour pair distribution ``(S, A, A)``, on-policy
    pair distribution). The behaviour of ``disagreeing`` groups is their π₀ draw before the
    acceptance step (IW-DPO's weights are then approximate)."""
    finite, rho = config.finite, cell["rho"]
    S = rho.numel()
    probs0 = cell["logp0"][:S].exp()
    on_policy = design_counts("on-policy", rho=rho, probs0=probs0)
    soft = ((finite.label_noise, finite.label_temperature) if finite.labels == "soft"
            else None)
    k = finite.responses_per_prompt
    if k:
        disagree = None
        if finite.sampler in ("policy", "disagreeing"):
            mu = probs0
        else:                                     # the design's response marginal
            mu = cell["counts"].sum(-1)
            mu = mu / mu.sum(1, keepdim=True)
        if finite.sampler == "disagreeing":
            disagree = disagreeing_pairs(reward[:S], cell["scores"])
        behaviour = design_counts("on-policy", rho=rho, probs0=mu)

        def draw(n, generator):
            return sample_groups(rho, mu, reward[:S], n, k, generator, disagree=disagree,
                                 factor=finite.group_factor, soft=soft)
        return draw, behaviour, on_policy
    source = cell["counts"] if finite.sampler == "design" else on_policy

    def draw(n, generator):
        return sample_pairs(source, reward[:S], n, generator, soft=soft)
    return draw, source, on_policy


def _solve(loss_name, options, config, cell, problem, sample, iw, L):
    """One method's exact empirical minimiser on ``sample`` (``iw``: IW-DPO's row weights)."""
    solver = dict(max_iter=config.max_iter, floor=config.precondition_floor)
    S = cell["rho"].numel()
    theta0, A, fn_train = cell["theta0"], cell["A"], cell["fn_train"]
    if options.get("importance"):
        problem = empirical_problem(sample, cell["rho"], problem.num_actions, problem.beta,
                                    row_weight=iw)
    if loss_name != "auxdpo":
        return fit_method(loss_name, fn_train, problem, theta0, A=A, ipo_length=L,
                          dpop_lambda=config.dpop_lambda, restarts=config.restarts,
                          restart_floor=config.restart_floor, **solver)
    omega, support = response_weights(sample, cell["logp0"][:S], options["weights"])
    lam = options.get("lambda_null", config.lambdas[0])
    scale, half = options.get("delta_scale"), options.get("half_count")
    count = occurrences(sample, S, problem.num_actions).clamp_min(1)
    if scale == "em":
        return _solve_em(config, cell, problem, sample, omega, support, count, half, lam)
    prior = 0.0 if scale is None else 1.0 / (scale * scale * len(sample))    # τ/n, τ = 1/σ²
    if half is not None:              # σ_k² = σ²·c_k/(c_k + c½); a row slot has c_k = 1
        prior = prior * (1 + half / count) if options["key"] == "response" else \
            prior * (1 + half)
    if options["key"] == "row":
        return fit_auxdpo_rows(fn_train, problem, sample, theta0, A=A, omega=omega,
                               mode=options["mode"], lambda_null=lam, delta_prior=prior,
                               **solver)
    return fit_method("auxdpo", fn_train, problem, theta0, A=A, mode=options["mode"],
                      lambda_null=lam, null_weights=omega, support=support,
                      delta_prior=prior, restarts=config.restarts,
                      restart_floor=config.restart_floor, **solver)


def _solve_em(config, cell, problem, sample, omega, support, count, half, lam,
              rounds: int = 8) -> Fit:
    """AuxDPO with the prior's σ estimated from the data (``--aux-delta-scale em``; a research
    item, docs/results.md): EM for the variance of a Gaussian prior, each response weighted
    by its constraint weight ω (π_ref under ``prompt`` weights), so the estimate refers to the
    π_ref-weighted offsets, not to the pairs' own distribution. E-step: the MAP solve, with
    each offset's posterior variance 1/(c_k/4 + τ_k) (the loss's curvature at margin 0);
    M-step: σ² = Σ ω_k (δ_k² + v_k)·m_k / Σ ω_k, m_k = (c_k + c½)/c_k with a count-dependent
    prior (1 without). From σ = 1; stops when σ² moves by < 1 %."""
    n, sigma2 = len(sample), 1.0
    factor = torch.ones_like(count) if half is None else 1 + half / count
    w, c, m = omega[support], count[support], factor[support]
    for _ in range(rounds):
        tau = factor / sigma2
        fit = fit_method("auxdpo", cell["fn_train"], problem, cell["theta0"], A=cell["A"],
                         mode="projection", lambda_null=lam, null_weights=omega,
                         support=support, delta_prior=tau / n, restarts=config.restarts,
                         restart_floor=config.restart_floor, max_iter=config.max_iter,
                         floor=config.precondition_floor)
        delta = fit.delta[support]
        var = 1.0 / (c / 4 + tau[support])
        new = float((w * (delta ** 2 + var) * m).sum() / w.sum())
        done = abs(new / sigma2 - 1) < 0.01
        sigma2 = new
        if done:
            break
    fit.delta_scale = sigma2 ** 0.5
    return fit


def fullbatch_cell(config, task, capacity_spec: str, seed: int, log) -> list[dict]:
    """Every n, β and method of one (seed, capacity), each fit the exact minimiser of its
    empirical loss on the same sample; rows as the population cells' plus the sample's size,
    its coverage and, for ``iw-dpo``, the effective sample size."""
    finite, reward, S = config.finite, task.reward, task.num_prompts
    mmlu = config.family == "mmlu-choice"
    capacity = (task.capacity(capacity_spec) if mmlu
                else FlatCapacity(task.model, capacity_spec, seed=seed))
    cell = cell_setup(config, task, capacity, seed)
    fn, theta0, logp0, rho = cell["fn"], cell["theta0"], cell["logp0"], cell["rho"]
    nA, L = logp0.shape[1], task.config.response_length
    draw, behaviour, on_policy = _draw(config, cell, reward)
    solved = {}
    for beta in config.betas:                        # the exact solutions do not depend on n
        rlhf, local = exact_rlhf(config, cell, reward, beta)
        with torch.no_grad():
            j_base = float(policy_metrics(logp0, logp0, reward, rho, beta, j_base=0.0,
                                          j_rlhf=1.0)["J"])
        solved[beta] = (rlhf, local, j_base)
    rows = []
    for n in finite.pair_counts:
        sample = draw(n, torch.Generator().manual_seed(20_000 + seed))
        iw, ess = importance_weights(sample, on_policy, behaviour)
        seen = int((occurrences(sample, S, nA) > 0).sum())
        common = {"seed": seed, "capacity": capacity_spec, "dim": capacity.dim,
                  "responses": int(cell["A"].shape[1]), "pairs": n, "seen": seen,
                  "pairs_per_response": 2 * n / seen,
                  "disagree_share": float(disagreeing_pairs(reward[:S], cell["scores"])[
                      sample.state, sample.chosen, sample.rejected].double().mean())}
        r_hat = None
        if finite.rm_steps > 0 and not mmlu:
            start = time.time()
            r_hat, rm_stats = fit_reward_table(config, task, sample, seed)
            rm_stats["seconds"] = time.time() - start
        for beta in config.betas:
            rlhf, local, j_base = solved[beta]
            problem = empirical_problem(sample, rho, nA, beta)
            exact = {"iterations": rlhf.iterations, "capped": rlhf.capped}
            thetas = {"base": (theta0, {}), "rlhf": (rlhf.theta, exact),
                      "rlhf_local": (local, {})}
            # IW-DPO needs the pairs' sampling distribution, which the disagreeing groups'
            # acceptance step leaves unknown: no such row there.
            for name, loss_name, options in method_variants(
                    config, importance=finite.sampler != "disagreeing"):
                start = time.time()
                fit = _solve(loss_name, options, config, cell, problem, sample, iw, L)
                stats = {"iterations": fit.iterations, "grad_norm": fit.grad_norm,
                         "capped": fit.capped, "seconds": time.time() - start}
                if hasattr(fit, "delta_scale"):                  # σ estimated by EM
                    stats["delta_scale"] = fit.delta_scale
                if options.get("importance"):
                    stats["ess"] = ess
                thetas[name] = (fit.theta, stats)
                log(f"seed {seed} {capacity_spec} n={n} β={beta:g} {name}: "
                    f"{fit.iterations} it, |grad| {fit.grad_norm:.2e}, "
                    f"{stats['seconds']:.1f}s")
            if r_hat is not None:
                thetas["rlhf_2stage"] = (exact_rlhf(config, cell, r_hat, beta)[0].theta,
                                         rm_stats)
            with torch.no_grad():
                for name, (theta, stats) in thetas.items():
                    m = policy_metrics(fn(theta), logp0, reward, rho, beta, j_base=j_base,
                                       j_rlhf=rlhf.objective)
                    rows.append({**common, "beta": beta, "method": name, **stats, **m})
    return rows
