"""Oracle solver speed: one objective evaluation (value + gradient) and A_θ₀, old path vs new.

    .venv/bin/python benchmarks/bench_oracle.py [--capacities norm lora:1 lora:4] [--rounds 5]

The task is the grid's ``tokens`` task (V = 6, L = 3, 16 + 4 prompts, width 32, 2 blocks: 720
sequences, 371,520 response pairs), seed 0, anti-aligned design, β = 100, one thread (as
``auxdpo oracle`` runs). Per capacity, interleaved rounds of:

* ``baseline``: the pre-change path, rebuilt here: the whole model at every θ
  (``FlatCapacity(tail=False)``), the pair log-probs gathered by 2-D advanced indexing
  ``logp[s, a]`` (its backward an accumulating index_put), and A_θ₀ in chunks of 64
  directions;
* ``ours``: :func:`auxdpo.harness.oracle.solvers.pair_loss_closure` on ``FlatCapacity`` (the frozen
  prefix recorded once; the head only at the scored positions; flat ``index_select``) and
  :func:`~auxdpo.harness.oracle.solvers.forward_score_matrix` with its default chunks of 8.

Printed: median milliseconds per DPO loss evaluation with its gradient, per AuxDPO evaluation
(θ and δ), and per A_θ₀ (d forward-mode passes), with the ratio baseline / ours and the largest
difference between the two paths' values and gradients (they compute the same numbers).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.solvers import forward_score_matrix, pair_loss_closure
from auxdpo.harness.oracle.tasks import build_token_task
from auxdpo.losses import get_loss


def baseline_closure(method, log_probs, problem, theta0):
    """The pre-change pair loss: 2-D advanced indexing of (S, A) log-probs."""
    loss_fn, table = get_loss(method), problem.pair_table()
    s, a, b = table.state, table.first, table.second
    S, nA = problem.num_states, problem.num_actions
    with torch.no_grad():
        ref = log_probs(theta0)[:S]
    ref_first, ref_second = ref[s, a], ref[s, b]

    def loss(theta, delta=None):
        logp = log_probs(theta)[:S]
        kw = {} if delta is None else dict(delta_chosen=delta[s * nA + a],
                                           delta_rejected=delta[s * nA + b])
        out = loss_fn(logp[s, a], logp[s, b], ref_first, ref_second, beta=problem.beta,
                      pref_prob=table.pref_prob, weight=table.weight, **kw)
        return out.losses.sum()

    return loss


def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", nargs="+", default=["norm", "lora:1", "lora:4"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="evaluations per round")
    parser.add_argument("--score-rounds", type=int, default=2, help="rounds for A_θ₀")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = OracleConfig(design="anti-aligned")
    task = build_token_task(config.task, 0)
    S = task.num_prompts
    print("| capacity | d | what | baseline ms | ours ms | baseline / ours | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.capacities:
        paths = {}
        for name, tail in (("baseline", False), ("ours", True)):
            capacity = FlatCapacity(task.model, spec, seed=0, tail=tail)
            paths[name] = (capacity, task.log_probs_fn(capacity, train_only=True))
        capacity, fn = paths["ours"]
        cell = cell_setup(config, task, capacity, 0)
        problem = PreferenceProblem(cell["rho"], task.reward[:S], cell["counts"], 100.0)
        theta = (capacity.theta0 + 0.01 * torch.randn(
            capacity.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
        delta = 0.1 * torch.randn(problem.num_states * problem.num_actions,
                                  dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        closures = {
            "baseline": {m: baseline_closure(m, paths["baseline"][1], problem, capacity.theta0)
                         for m in ("dpo", "auxdpo")},
            "ours": {m: pair_loss_closure(m, fn, problem, capacity.theta0)
                     for m in ("dpo", "auxdpo")}}

        def evaluate(path, method):
            x = theta.clone().requires_grad_(True)
            extra = (delta.clone().requires_grad_(True),) if method == "auxdpo" else ()
            value = closures[path][method](x, *extra)
            grads = torch.autograd.grad(value, (x, *extra))
            return torch.cat([value.detach().reshape(1), *grads])

        jobs = {f"{m} loss + gradient": (lambda p, m=m: evaluate(p, m)) for m in ("dpo", "auxdpo")}
        jobs["A_θ₀ (forward mode)"] = lambda p: forward_score_matrix(
            paths[p][1], capacity.theta0, **({"chunk_size": 64} if p == "baseline" else {}))
        for what, job in jobs.items():
            diff = float((job("baseline") - job("ours")).abs().max())
            times = {"baseline": [], "ours": []}
            repeats = 1 if what.startswith("A_") else args.repeats
            for _ in range(args.score_rounds if what.startswith("A_") else args.rounds):
                for path in ("baseline", "ours"):
                    times[path].append(timed(lambda: job(path), repeats))
            base, ours = (statistics.median(times[p]) for p in ("baseline", "ours"))
            print(f"| {spec} | {capacity.dim} | {what} | {base:.1f} | {ours:.1f} | "
                  f"{base / ours:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
