"""The lab's experiments: Proposition 2, its sensitivity map, the log-linear family, β sweep.

Each function returns plain data (dicts of floats, lists of rows) and, where it writes files,
their paths; text formatting lives beside it so the CLI stays thin.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from pathlib import Path

import torch

from auxdpo.harness.lab.policies import three_response_policy
from auxdpo.harness.lab.problems import PROP2_REWARD, prop2_problem, random_loglinear_instance
from auxdpo.harness.lab.solvers import METHODS, rlhf_objective, solve_all
from auxdpo.harness.lab.sweep import simplex_grid, solve_prop2_grid

__all__ = [
    "FAILURE_MODES",
    "PROP2_METHODS",
    "beta_sweep",
    "failure_modes",
    "format_beta_sweep",
    "format_gap_table",
    "format_prop2",
    "loglinear_gap",
    "prop2",
    "run_demo",
    "sensitivity",
    "single_thread",
    "write_csv",
]

PROP2_METHODS = ("base", "dpo", "ipo", "dpop", "auxdpo", "rlhf", "rlhf_local")
GAP_METHODS = ("dpo", "ipo", "dpop", "auxdpo", "rlhf_local")
FAILURE_MODES = ("prefers_second_best", "best_prob_below_base", "reward_below_base")
_TOL = 1e-12  # strict inequalities below need this margin, so θ = θ₀ never "fails"


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: the lab's tensors are tiny, and threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def failure_modes(probs: torch.Tensor, base_probs: torch.Tensor,
                  reward: torch.Tensor) -> list[str]:
    """The Proposition 2 failure modes that hold, for one state's ``(A,)`` probabilities.

    * ``prefers_second_best``: π(second-best response) > π(best response);
    * ``best_prob_below_base``: π(best) < π₀(best);
    * ``reward_below_base``: πᵀr* < π₀ᵀr*.
    """
    order = torch.argsort(reward, descending=True)
    best, second = int(order[0]), int(order[1])
    holds = {
        "prefers_second_best": float(probs[second] - probs[best]) > _TOL,
        "best_prob_below_base": float(base_probs[best] - probs[best]) > _TOL,
        "reward_below_base": float((base_probs - probs) @ reward) > _TOL,
    }
    return [name for name in FAILURE_MODES if holds[name]]


def prop2(beta: float, counts=(1.0, 1.0, 100.0), dpop_lambda: float = 50.0) -> dict:
    """θ, π_θ, expected reward and failure modes of every method on the Prop. 2 instance."""
    policy, problem = three_response_policy(), prop2_problem(beta, counts)
    sols = solve_all(policy, problem, dpop_lambda=dpop_lambda)
    reward = problem.reward[0]
    base_probs = policy.probs(policy.theta0)[0]
    out = {"theta": {}, "reward": {}, "failures": {}, "probs": {}}
    for name in PROP2_METHODS:
        probs = policy.probs(sols[name].theta)[0].detach()
        out["theta"][name] = float(sols[name].theta[0])
        out["reward"][name] = float(probs @ reward)
        out["failures"][name] = failure_modes(probs, base_probs, reward)
        out["probs"][name] = [float(p) for p in probs]
    return out


def format_prop2(result: dict, beta: float, counts, dpop_lambda: float) -> str:
    """The text table printed by ``auxdpo lab prop2``."""
    n12, n23, n31 = counts
    lines = [f"Proposition 2: r* = {list(PROP2_REWARD)}, pi_theta ~ [e^t, e^-t, 1], theta0 = 0, "
             f"beta = {beta:g}, counts n12={n12:g} n23={n23:g} n31={n31:g}, "
             f"dpop_lambda = {dpop_lambda:g}",
             f"{'method':<11}{'theta':>11}{'pi(a1)':>9}{'pi(a2)':>9}{'pi(a3)':>9}"
             f"{'reward':>9}  failures"]
    for name in PROP2_METHODS:
        p = result["probs"][name]
        fails = ",".join(result["failures"][name]) or "-"
        lines.append(f"{name:<11}{result['theta'][name]:>11.6f}{p[0]:>9.4f}{p[1]:>9.4f}"
                     f"{p[2]:>9.4f}{result['reward'][name]:>9.5f}  {fails}")
    return "\n".join(lines)


def _atomic_write(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """Write a CSV atomically (tmp file, then os.replace)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return _atomic_write(Path(path), lambda tmp: tmp.write_text(buf.getvalue()))


def sensitivity(beta: float, out_dir, resolution: int = 60,
                dpop_lambda: float = 50.0) -> tuple[list[Path], dict]:
    """Figure 2 made measurable: Δ expected reward of each method over the count simplex.

    Writes ``sensitivity_beta{β}.csv`` (columns n12, n23, n31, theta_<m>, reward_change_<m>)
    and ``sensitivity_beta{β}.png``; returns the paths and a summary (per method: share of
    grid points where the expected reward falls below the base policy's, min/max change).
    """
    from auxdpo.harness.lab.plotting import plot_sensitivity

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = simplex_grid(resolution)
    thetas = solve_prop2_grid(beta, grid, dpop_lambda=dpop_lambda)
    reward = torch.tensor(PROP2_REWARD, dtype=torch.float64)
    features = three_response_policy().features[0, :, 0]
    base = float(reward.mean())
    change = {m: torch.softmax(t[:, None] * features, dim=-1) @ reward - base
              for m, t in thetas.items()}
    header = ["n12", "n23", "n31"] + [f"theta_{m}" for m in METHODS] + [
        f"reward_change_{m}" for m in METHODS]
    rows = [[*map(float, grid[i])] + [float(thetas[m][i]) for m in METHODS]
            + [float(change[m][i]) for m in METHODS] for i in range(grid.shape[0])]
    stem = f"sensitivity_beta{beta:g}"
    csv_path = write_csv(out_dir / f"{stem}.csv", header, rows)
    png_path = plot_sensitivity(out_dir / f"{stem}.png", grid, change, beta)
    summary = {m: {"share_below_base": float((change[m] < -_TOL).double().mean()),
                   "min": float(change[m].min()), "max": float(change[m].max())}
               for m in METHODS}
    return [csv_path, png_path], summary


def _gap_closed(policy, problem, sols) -> dict[str, float]:
    j0, j_star = sols["base"].objective, sols["rlhf"].objective
    return {m: (float(rlhf_objective(policy, problem, sols[m].theta)) - j0) / (j_star - j0)
            for m in GAP_METHODS}


def loglinear_gap(beta: float, skew: float, seeds: int, *, states: int = 10,
                  actions: int = 20, dim: int = 4, dpop_lambda: float = 50.0) -> dict:
    """Per method, mean/min/max over seeds of (J(θ) − J(θ₀)) / (J(θ_RLHF) − J(θ₀))."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    per_seed = []
    for seed in range(seeds):
        policy, problem = random_loglinear_instance(
            seed, beta=beta, skew=skew, num_states=states, num_actions=actions, dim=dim)
        per_seed.append(_gap_closed(policy, problem,
                                    solve_all(policy, problem, dpop_lambda=dpop_lambda)))
    return {m: {"mean": sum(r[m] for r in per_seed) / seeds,
                "min": min(r[m] for r in per_seed), "max": max(r[m] for r in per_seed)}
            for m in GAP_METHODS}


def format_gap_table(results: list[dict]) -> str:
    """Rows = methods, one column block per (β, skew): mean [min, max] of the gap closed."""
    head = f"{'method':<11}" + "".join(
        f"{'beta=' + format(r['beta'], 'g') + ' skew=' + format(r['skew'], 'g'):>28}"
        for r in results)
    lines = ["fraction of the RLHF gain closed, (J(theta)-J(theta0))/(J(theta_RLHF)-J(theta0)): "
             "mean [min, max] over seeds", head]
    for m in GAP_METHODS:
        cells = "".join(
            f"{g['mean']:>9.4f} [{g['min']:>7.3f},{g['max']:>7.3f}]"
            for g in (r["gap_closed"][m] for r in results))
        lines.append(f"{m:<11}{cells}")
    return "\n".join(lines)


def beta_sweep(out_dir=None, betas=(0.5, 1, 2, 5, 10, 20, 50, 100, 200), *, seed: int = 0,
               skew: float = 1.0, dpop_lambda: float = 50.0) -> tuple[list[dict], list[Path]]:
    """AuxDPO vs exact RLHF as β grows (Prop. "error") on one log-linear instance.

    Per β: ‖θ_aux − θ_RLHF‖ / ‖θ_RLHF − θ₀‖ and the share of RLHF's gain AuxDPO (and DPO)
    leave on the table. Writes ``beta_sweep.csv`` and ``.png`` when ``out_dir`` is given.
    """
    rows = []
    for beta in betas:
        policy, problem = random_loglinear_instance(seed, beta=float(beta), skew=skew)
        sols = solve_all(policy, problem, dpop_lambda=dpop_lambda, methods=("dpo", "auxdpo"))
        move = float((sols["rlhf"].theta - policy.theta0).norm())
        gap = _gap_closed(policy, problem, {**sols, "ipo": sols["dpo"], "dpop": sols["dpo"]})
        rows.append({"beta": float(beta),
                     "rlhf_move": move,
                     "auxdpo_rel_theta_gap":
                         float((sols["auxdpo"].theta - sols["rlhf"].theta).norm()) / move,
                     "auxdpo_gain_shortfall": 1.0 - gap["auxdpo"],
                     "dpo_gain_shortfall": 1.0 - gap["dpo"]})
    paths = []
    if out_dir is not None:
        from auxdpo.harness.lab.plotting import plot_beta_sweep

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        header = list(rows[0])
        paths.append(write_csv(out_dir / "beta_sweep.csv", header,
                               [[r[k] for k in header] for r in rows]))
        paths.append(plot_beta_sweep(out_dir / "beta_sweep.png", rows))
    return rows, paths


def format_beta_sweep(rows: list[dict]) -> str:
    """The text table printed by ``auxdpo lab beta-sweep``."""
    lines = [f"{'beta':>8}{'|theta_rlhf-theta0|':>21}{'aux rel theta gap':>19}"
             f"{'aux gain shortfall':>20}{'dpo gain shortfall':>20}"]
    for r in rows:
        lines.append(f"{r['beta']:>8g}{r['rlhf_move']:>21.3e}{r['auxdpo_rel_theta_gap']:>19.3e}"
                     f"{r['auxdpo_gain_shortfall']:>20.3e}{r['dpo_gain_shortfall']:>20.3e}")
    return "\n".join(lines)


def run_demo(out_dir) -> list[Path]:
    """``make demo``'s lab part: the Prop. 2 table at β = 10 with counts (1, 1, 100), printed
    and saved as ``prop2_beta10.txt``, plus a coarse sensitivity map. Returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with single_thread():
        beta, counts = 10.0, (1.0, 1.0, 100.0)
        table = format_prop2(prop2(beta, counts), beta, counts, 50.0)
        print(table)
        txt = _atomic_write(out_dir / "prop2_beta10.txt", lambda t: t.write_text(table + "\n"))
        paths, _ = sensitivity(beta, out_dir, resolution=30)
    return [txt, *paths]

