"""The oracle's population cell: soft labels from the design's counts, exact minimisers.

For one (seed, capacity): per β the exact RLHF optimum over the trainable parameters, the
local RLHF solution (Eq. 5) and each method's population minimiser
(:func:`auxdpo.harness.oracle.solvers.fit_method`), every one scored exactly under r*.
"""

from __future__ import annotations

import time

import torch

from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup, method_names
from auxdpo.harness.oracle.metrics import policy_metrics
from auxdpo.harness.oracle.solvers import (
    fit_auxdpo_relinearised,
    fit_method,
    fit_rlhf,
    local_rlhf_theta,
)

__all__ = ["population_cell"]


def population_cell(config, task, capacity_spec, seed, log) -> list[dict]:
    """All β and methods for one (seed, capacity)."""
    S, L = task.num_prompts, task.config.response_length
    capacity = (task.capacity(capacity_spec) if config.family == "mmlu-choice"
                else FlatCapacity(task.model, capacity_spec, seed=seed))
    cell = cell_setup(config, task, capacity, seed)
    fn, fn_train, theta0, logp0, rho, A, counts = (cell[k] for k in (
        "fn", "fn_train", "theta0", "logp0", "rho", "A", "counts"))
    reward = task.reward
    rows = []
    for beta in config.betas:
        problem = PreferenceProblem(rho, reward[:S], counts, beta)
        local = local_rlhf_theta(A, rho, logp0[:S], reward[:S], beta, theta0)
        solver = dict(max_iter=config.max_iter, floor=config.precondition_floor,
                      restarts=config.restarts, restart_floor=config.restart_floor)
        rlhf = fit_rlhf(fn_train, problem, theta0, A=A, starts=[theta0, local], **solver)
        with torch.no_grad():
            j_base = float(policy_metrics(logp0, logp0, reward, rho, beta, j_base=0.0,
                                          j_rlhf=1.0)["J"])
        thetas = {"base": (theta0, 0, 0.0, False),
                  "rlhf": (rlhf.theta, rlhf.iterations, rlhf.grad_norm, rlhf.capped),
                  "rlhf_local": (local, 0, 0.0, False)}
        paths = {}
        for name, loss_name, kwargs in method_names(config):
            start = time.time()
            if "relinearise" in kwargs:
                fit = fit_auxdpo_relinearised(fn_train, problem, theta0, A=A,
                                              rounds=kwargs["relinearise"], **solver)
                paths[name] = fit.path
            else:
                fit = fit_method(loss_name, fn_train, problem, theta0, A=A,
                                 dpop_lambda=config.dpop_lambda, ipo_length=L, **solver,
                                 **kwargs)
            thetas[name] = (fit.theta, fit.iterations, fit.grad_norm, fit.capped)
            log(f"seed {seed} {capacity_spec} β={beta:g} {name}: {fit.iterations} it, "
                f"|grad| {fit.grad_norm:.2e}, {time.time() - start:.1f}s")
        for name, (theta, its, gnorm, capped) in thetas.items():
            with torch.no_grad():
                m = policy_metrics(fn(theta), logp0, reward, rho, beta, j_base=j_base,
                                   j_rlhf=rlhf.objective)
            rows.append({"seed": seed, "capacity": capacity_spec, "dim": capacity.dim,
                         "responses": int(A.shape[1]), "beta": beta, "method": name,
                         "iterations": its, "grad_norm": gnorm, "capped": capped, **m})
            if name in paths:               # the gap closed after each relinearised round
                with torch.no_grad():
                    rows[-1]["round_gaps"] = [float(policy_metrics(
                        fn(t), logp0, reward, rho, beta, j_base=j_base,
                        j_rlhf=rlhf.objective)["gap_closed"]) for t in paths[name]]
    return rows
