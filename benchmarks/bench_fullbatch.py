"""The finite regime's full-batch solver: seconds per method and seed, against the trainer.

    .venv/bin/python benchmarks/bench_fullbatch.py [--pairs 1000 100000] [--max-iter 300]

The task is the grid's ``tokens`` task (V = 6, L = 3, 16 + 4 prompts, width 32, 2 blocks),
capacity ``norm``, anti-aligned design, β = 100, seed 0, one thread (as ``auxdpo oracle``
runs). For every n, one sample and each method's exact empirical minimiser
(:mod:`auxdpo.harness.oracle.fullbatch`): DPO, response-keyed AuxDPO (``prompt`` and
``multiplicity`` weights), row-keyed AuxDPO and IW-DPO. The baseline, in the same run, is
what the trainer path needs for one method at the smallest n: ``AuxDPOTrainer`` running DPO
for the finite regime's default 20 epochs (``--trainer-epochs``). Printed: seconds per solve,
L-BFGS iterations, and the trainer's seconds divided by each solve's.
"""

from __future__ import annotations

import argparse
import time

import torch

from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup
from auxdpo.harness.oracle.designs import design_counts
from auxdpo.harness.oracle.finite import train_method
from auxdpo.harness.oracle.fullbatch import (
    empirical_problem,
    fit_auxdpo_rows,
    importance_weights,
    response_weights,
)
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.sampling import FiniteConfig, sample_pairs
from auxdpo.harness.oracle.solvers import fit_method
from auxdpo.harness.oracle.tasks import build_token_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--trainer-epochs", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = OracleConfig(max_iter=args.max_iter)
    task = build_token_task(config.task, 0)
    capacity = FlatCapacity(task.model, "norm", seed=0)
    cell = cell_setup(config, task, capacity, 0)
    S, beta = task.num_prompts, 100.0
    logp0, A, fn, theta0 = cell["logp0"], cell["A"], cell["fn_train"], cell["theta0"]
    on_policy = design_counts("on-policy", rho=cell["rho"], probs0=logp0[:S].exp())
    start = time.perf_counter()
    sample = sample_pairs(cell["counts"], task.reward[:S], min(args.pairs),
                          torch.Generator().manual_seed(20_000))
    train_method(task, capacity, sample, method="dpo", beta=beta, seed=0,
                 finite=FiniteConfig(pairs=min(args.pairs), epochs=args.trainer_epochs))
    trainer_seconds = time.perf_counter() - start
    print(f"baseline: AuxDPOTrainer, dpo, n = {min(args.pairs)}, {args.trainer_epochs:g} epochs:"
          f" {trainer_seconds:.1f} s")
    print("| n | method | iterations | seconds | trainer / this |")
    print("|---|---|---|---|---|")
    for n in args.pairs:
        sample = sample_pairs(cell["counts"], task.reward[:S], n,
                              torch.Generator().manual_seed(20_000))
        problem = empirical_problem(sample, cell["rho"], logp0.shape[1], beta)
        weight, _ = importance_weights(sample, on_policy, cell["counts"])
        solves = {
            "dpo": lambda: fit_method("dpo", fn, problem, theta0, A=A, max_iter=args.max_iter),
            "iw-dpo": lambda: fit_method("dpo", fn, empirical_problem(
                sample, cell["rho"], logp0.shape[1], beta, row_weight=weight), theta0, A=A,
                max_iter=args.max_iter),
        }
        for kind in ("prompt", "multiplicity"):
            omega, support = response_weights(sample, logp0[:S], kind)
            solves[f"auxdpo-response-{kind}"] = (
                lambda o=omega, s=support: fit_method(
                    "auxdpo", fn, problem, theta0, A=A, null_weights=o, support=s,
                    max_iter=args.max_iter))
        omega, _ = response_weights(sample, logp0[:S], "multiplicity")
        solves["auxdpo-row"] = lambda: fit_auxdpo_rows(fn, problem, sample, theta0, A=A,
                                                       omega=omega, max_iter=args.max_iter)
        for name, solve in solves.items():
            start = time.perf_counter()
            fit = solve()
            seconds = time.perf_counter() - start
            print(f"| {n} | {name} | {fit.iterations} | {seconds:.1f} | "
                  f"{trainer_seconds / seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
