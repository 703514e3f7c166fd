"""`auxdpo diagnose`'s local check (`linearisation_error`) against the oracle's population grid.

    PYTHONPATH=src .venv/bin/python benchmarks/diagnose_linearisation.py [--designs
        anti-aligned on-policy] [--capacities norm lora:1] [--betas 1 10 100] [--seeds 3]
        [--json out.json] [--quick] [--merge a.json b.json]

For every (design, capacity, seed) the oracle's population cell is run exactly as ``auxdpo
oracle --regime population`` runs it (:func:`auxdpo.harness.oracle.population.population_cell`,
the grid's solver settings per capacity, methods dpo and auxdpo): its rows give ``gap_closed``
of ``rlhf_local``, ``dpo`` and ``auxdpo`` under r*. Beside it, from the same setup
(:func:`auxdpo.harness.oracle.cells.cell_setup`: the same capacity, θ₀, log π_θ₀, ρ and A_θ₀),
the local RLHF step Δ = θ_local − θ₀ of Eq. 5 under the TRUE r*
(:func:`auxdpo.harness.oracle.solvers.local_rlhf_theta`, the oracle's ``rlhf_local``) and the
diagnostic's ``linearisation_error`` along it, with the formula of
``auxdpo.diagnose.run._linearisation``: ‖log π(θ₀+Δ) − log π(θ₀) − AᵀΔ‖_D / ‖AᵀΔ‖_D with
D = ρ·π_θ₀ (the population has every response, so r̂ = r* and D is the full ρ·π_θ₀).

Reported per (design, capacity, β), means over seeds: ``linearisation_error``, the measured
exact-vs-local gap 1 − gap_closed(rlhf_local), and gap(auxdpo) − gap(dpo). Summary: Spearman
between linearisation_error and the exact-vs-local gap (per (capacity, β, seed) point, both
design-independent, and over the (capacity, β) means), and the 2×2 count of ``not-local``
(linearisation_error > 0.5, the diagnostic's ``LOCAL_LIMIT``) against "AuxDPO falls below DPO"
(gap(auxdpo) < gap(dpo) − 0.05) over the (design, capacity, β, seed) points.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from diagnose_report import finish, merged

from auxdpo.diagnose.run import LOCAL_LIMIT
from auxdpo.geometry import base_weights
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup
from auxdpo.harness.oracle.population import population_cell
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.solvers import local_rlhf_theta
from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task

__all__ = ["BELOW", "linearisation_error", "oracle_config", "quick", "run", "run_seed",
           "summarise"]

DTYPE = torch.float64
BELOW = 0.05                 # "AuxDPO falls below DPO": gap(auxdpo) < gap(dpo) − BELOW
# The grid's solver settings (docs/oracle.md, "The full grid").
SOLVER = {"norm": dict(max_iter=150),
          "lora": dict(max_iter=100, restarts=4, precondition_floor=1e-3, restart_floor=1e-6)}


def oracle_config(design: str, capacity: str, betas: list[float],
                  task: TokenTaskConfig | None = None, **solver) -> OracleConfig:
    """`auxdpo oracle --regime population --methods dpo auxdpo` with the grid's solver
    settings for ``capacity`` (``solver`` overrides them)."""
    settings = dict(SOLVER["norm" if capacity == "norm" else "lora"], **solver)
    return OracleConfig(family="tokens", regime="population", design=design,
                        capacities=[capacity], betas=list(betas), seeds=1,
                        methods=["dpo", "auxdpo"], task=task or TokenTaskConfig(), **settings)


def linearisation_error(fn_train, theta0: torch.Tensor, logp0: torch.Tensor, A: torch.Tensor,
                        rho: torch.Tensor, reward: torch.Tensor, beta: float
                        ) -> tuple[float, float]:
    """(linearisation_error, ‖Δ‖) along the local RLHF step Δ under ``reward`` (S, A):
    ``auxdpo.diagnose.run._linearisation``'s formula on every response, D = ρ·π_θ₀."""
    S = rho.numel()
    step = local_rlhf_theta(A, rho, logp0[:S], reward[:S], beta, theta0) - theta0
    weights = base_weights(rho, logp0[:S])
    with torch.no_grad():
        exact = (fn_train(theta0 + step) - logp0[:S]).reshape(-1).to(DTYPE)
    first_order = A.T.to(DTYPE) @ step.to(DTYPE)
    scale = float((weights * first_order.pow(2)).sum().sqrt())
    missed = float((weights * (exact - first_order).pow(2)).sum().sqrt())
    return (missed / scale if scale > 0 else math.nan), float(step.norm())


def run_seed(task, design: str, capacity_spec: str, betas: list[float], seed: int, *,
             task_config: TokenTaskConfig | None = None, log=print, **solver) -> list[dict]:
    """One (design, capacity, seed): the oracle's rows and the local check per β."""
    config = oracle_config(design, capacity_spec, betas, task_config, **solver)
    start = time.time()
    rows = population_cell(config, task, capacity_spec, seed, lambda message: None)
    oracle_seconds = time.time() - start
    capacity = FlatCapacity(task.model, capacity_spec, seed=seed)    # as population_cell
    setup = cell_setup(config, task, capacity, seed)
    out = []
    for beta in betas:
        start = time.time()
        error, step_norm = linearisation_error(setup["fn_train"], setup["theta0"],
                                               setup["logp0"], setup["A"], setup["rho"],
                                               task.reward, beta)
        gaps = {r["method"]: r["gap_closed"] for r in rows if r["beta"] == beta}
        point = {"design": design, "capacity": capacity_spec, "beta": beta, "seed": seed,
                 "dim": capacity.dim, "linearisation_error": error, "step_norm": step_norm,
                 "local_gap": 1.0 - gaps["rlhf_local"], "rlhf_local": gaps["rlhf_local"],
                 "dpo": gaps["dpo"], "auxdpo": gaps["auxdpo"],
                 "oracle_seconds": oracle_seconds, "check_seconds": time.time() - start}
        log(f"{design:12s} {capacity_spec:6s} β={beta:<5g} seed {seed}: lin {error:.4f} "
            f"| 1 − local {point['local_gap']:+.4f} | dpo {point['dpo']:+.3f} "
            f"auxdpo {point['auxdpo']:+.3f} ({oracle_seconds:.0f} s)")
        out.append(point)
    return out


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) if len(x) > 2 else math.nan


def summarise(points: list[dict]) -> dict:
    """The table of means and the summary (module docstring)."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["design"], p["capacity"], p["beta"]), []).append(p)
    table = []
    for (design, capacity, beta), members in groups.items():
        mean = lambda key: sum(m[key] for m in members) / len(members)  # noqa: E731
        table.append({"design": design, "capacity": capacity, "beta": beta,
                      "seeds": len(members), "linearisation_error": mean("linearisation_error"),
                      "local_gap": mean("local_gap"), "dpo": mean("dpo"),
                      "auxdpo": mean("auxdpo"),
                      "aux_minus_dpo": mean("auxdpo") - mean("dpo"),
                      "not_local": sum(m["linearisation_error"] > LOCAL_LIMIT for m in members),
                      "below": sum(m["auxdpo"] < m["dpo"] - BELOW for m in members)})
    # linearisation_error and rlhf_local do not depend on the design: one point per
    # (capacity, β, seed), one mean per (capacity, β)
    local = {(p["capacity"], p["beta"], p["seed"]): p for p in points}
    by_cb: dict[tuple, list[dict]] = {}
    for (capacity, beta, _), p in local.items():
        by_cb.setdefault((capacity, beta), []).append(p)
    cb_means = [(sum(p["linearisation_error"] for p in ps) / len(ps),
                 sum(p["local_gap"] for p in ps) / len(ps)) for ps in by_cb.values()]
    count = {f"{'not-local' if nl else 'local'}/{'below' if b else 'not-below'}": 0
             for nl in (True, False) for b in (True, False)}
    for p in points:
        nl = p["linearisation_error"] > LOCAL_LIMIT
        b = p["auxdpo"] < p["dpo"] - BELOW
        count[f"{'not-local' if nl else 'local'}/{'below' if b else 'not-below'}"] += 1
    return {"table": table,
            "spearman_points": _spearman([p["linearisation_error"] for p in local.values()],
                                         [p["local_gap"] for p in local.values()]),
            "spearman_points_n": len(local),
            "spearman_means": _spearman([m[0] for m in cb_means], [m[1] for m in cb_means]),
            "spearman_means_n": len(cb_means),
            "count": count, "points": len(points)}


def run(designs: list[str], capacities: list[str], betas: list[float], seeds: int,
        first_seed: int = 0, *, task: TokenTaskConfig | None = None, log=print,
        **solver) -> dict:
    torch.set_num_threads(1)
    points = []
    for seed in range(first_seed, first_seed + seeds):
        built = build_token_task(task or TokenTaskConfig(), seed)
        for capacity in capacities:
            for design in designs:
                points += run_seed(built, design, capacity, betas, seed, task_config=task,
                                   log=log, **solver)
    return {"points": points, "summary": summarise(points)}


def quick(task: TokenTaskConfig | None = None, betas: tuple[float, ...] = (1.0, 10.0, 100.0),
          seed: int = 0, log=print) -> dict:
    """``--quick``: one cell (on-policy, ``norm``), one seed, every β."""
    return run(["on-policy"], ["norm"], list(betas), 1, seed, task=task, log=log)


def print_summary(result: dict) -> None:
    s = result["summary"]
    print("\n| design | capacity | β | seeds | linearisation_error | 1 − gap(rlhf_local) | "
          "gap(dpo) | gap(auxdpo) | auxdpo − dpo | not-local | auxdpo below dpo |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in s["table"]:
        print(f"| {t['design']} | `{t['capacity']}` | {t['beta']:g} | {t['seeds']} | "
              f"{t['linearisation_error']:.4g} | {t['local_gap']:+.4g} | {t['dpo']:+.3f} | "
              f"{t['auxdpo']:+.3f} | {t['aux_minus_dpo']:+.3f} | {t['not_local']} | "
              f"{t['below']} |")
    print(f"\nSpearman(linearisation_error, 1 − gap(rlhf_local)): "
          f"{s['spearman_points']:.3f} over {s['spearman_points_n']} (capacity, β, seed) "
          f"points, {s['spearman_means']:.3f} over {s['spearman_means_n']} (capacity, β) means")
    c = s["count"]
    print(f"\n| {s['points']} (design, capacity, β, seed) points | auxdpo < dpo − {BELOW} | "
          f"not below |")
    print("|---|---|---|")
    print(f"| not-local (> {LOCAL_LIMIT}) | {c['not-local/below']} | {c['not-local/not-below']} |")
    print(f"| local | {c['local/below']} | {c['local/not-below']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", nargs="+", default=["anti-aligned", "on-policy"])
    parser.add_argument("--capacities", nargs="+", default=["norm", "lora:1"])
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, help="override the grid's L-BFGS budget")
    parser.add_argument("--restarts", type=int, help="override the grid's restarts")
    parser.add_argument("--json", help="write points and summary to this file")
    parser.add_argument("--quick", action="store_true",
                        help="on-policy, norm, β ∈ {1, 10, 100}, seed 0 only")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="summarise the points of earlier --json files (runs nothing)")
    args = parser.parse_args()
    start = time.time()
    solver = {k: v for k, v in (("max_iter", args.max_iter), ("restarts", args.restarts))
              if v is not None}
    if args.merge:
        result = merged(args.merge, summarise)
    elif args.quick:
        result = quick()
    else:
        result = run(args.designs, args.capacities, args.betas, args.seeds, args.first_seed,
                     **solver)
    finish(result, start, print_summary, args.json)


if __name__ == "__main__":
    main()
