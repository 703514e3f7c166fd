"""Exact-lab speed: the log-linear experiment's wall time, and AuxDPO's Newton vs scipy L-BFGS.

    .venv/bin/python benchmarks/bench_lab.py [--seeds 10] [--instances 2]

1. ``auxdpo lab loglinear --beta 1,10 --skew 0,1,3 --seeds 10`` in-process (60 instances, each
   solving DPO, IPO, DPOP, AuxDPO, exact RLHF and local RLHF): wall and CPU seconds; the
   target is under 20 s.
2. AuxDPO alone on a few default instances (|S|=10, |A|=20, d=4: 200 variables): our exact
   Newton on (θ, c) against a baseline in the same process, scipy's L-BFGS-B on the full
   null-space basis of A_ρ,θ₀ (autograd gradients, gtol 1e-8, at most ``--lbfgs-iters``
   iterations). Prints the time ratio baseline/ours and the largest |θ difference| between
   the two answers (how far the capped baseline still is from the exact minimiser).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from auxdpo.geometry import base_weights, null_space_basis, score_matrix
from auxdpo.harness.lab.experiments import loglinear_gap, single_thread
from auxdpo.harness.lab.objectives import PairLossObjective
from auxdpo.harness.lab.problems import random_loglinear_instance
from auxdpo.harness.lab.solvers import solve


def lbfgs_auxdpo(policy, problem, max_iter: int) -> torch.Tensor:
    """Baseline: L-BFGS-B on x = (θ, c), δ = Γc, Γ an orthonormal basis of N(A_ρ,θ₀)."""
    from scipy.optimize import minimize

    A = score_matrix(policy.log_probs, policy.theta0)
    weights = base_weights(problem.rho, policy.log_probs(policy.theta0))
    basis = null_space_basis(A * weights[None, :])
    objective = PairLossObjective("auxdpo", policy, problem, basis=basis)

    def fun(x):
        xt = torch.from_numpy(x).requires_grad_(True)
        value = objective.value(xt)
        (grad,) = torch.autograd.grad(value, xt)
        return float(value.detach()), grad.numpy()

    x0 = np.concatenate([policy.theta0.numpy(), np.zeros(basis.shape[1])])
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-8, "ftol": 1e-15, "maxiter": max_iter})
    return torch.from_numpy(res.x[:policy.dim])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--lbfgs-iters", type=int, default=2000,
                        help="L-BFGS-B iteration cap (it needs ~10^4+ to reach 1e-6 in θ)")
    args = parser.parse_args()
    with single_thread():
        solve("auxdpo", *random_loglinear_instance(99, beta=10.0, skew=1.0))  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for beta in (1.0, 10.0):
            for skew in (0.0, 1.0, 3.0):
                loglinear_gap(beta, skew, args.seeds)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"loglinear 2 betas x 3 skews x {args.seeds} seeds: {wall:.2f} s wall, "
              f"{cpu:.2f} s CPU (target < 20 s)")
        ours_t = base_t = 0.0
        worst = 0.0
        for seed in range(args.instances):
            policy, problem = random_loglinear_instance(seed, beta=10.0, skew=3.0)
            t = time.perf_counter()
            ours = solve("auxdpo", policy, problem).theta
            ours_t += time.perf_counter() - t
            t = time.perf_counter()
            base = lbfgs_auxdpo(policy, problem, args.lbfgs_iters)
            base_t += time.perf_counter() - t
            worst = max(worst, float((ours - base).abs().max()))
        print(f"AuxDPO on {args.instances} instances (200 variables): Newton {ours_t:.3f} s, "
              f"scipy L-BFGS-B {base_t:.3f} s, ratio {base_t / ours_t:.1f}x, "
              f"max |theta diff| {worst:.2e}")


if __name__ == "__main__":
    main()
