"""What every regime's cell shares: one (seed, capacity)'s setup, exact RLHF, the row names.

A cell is one (seed, capacity) of an oracle run. :func:`cell_setup` builds what all three
cells need (the population cell of :mod:`auxdpo.harness.oracle.population`, the trainer's finite cell
of :mod:`auxdpo.harness.oracle.finite`, the full-batch finite cell of :mod:`auxdpo.harness.oracle.fullbatch`):
log-prob functions, θ₀, ρ, A_θ₀ and the design's counts. :func:`exact_rlhf` is the RLHF
optimum each cell measures against; :func:`method_names` (population) and
:func:`method_variants` (finite) name the rows a cell produces.
"""

from __future__ import annotations

import torch

from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.designs import design_counts
from auxdpo.harness.oracle.sampling import (
    DEFAULT_DELTA_HALF_COUNT,
    DEFAULT_DELTA_SCALE,
    DEFAULT_NULL_WEIGHTS,
)
from auxdpo.harness.oracle.solvers import fit_rlhf, forward_score_matrix, local_rlhf_theta

__all__ = ["cell_setup", "exact_rlhf", "method_names", "method_variants"]


def cell_setup(config, task, capacity, seed: int) -> dict:
    """What both regimes need for one (seed, capacity): the log-prob functions ``fn`` (all
    prompts) and ``fn_train``, θ₀, log π₀ ``(S + H, A)``, ρ, A_θ₀ ``(d, S·A)`` and the
    design's counts (the anti-aligned design scores pairs by the local RLHF direction)."""
    S, reward = task.num_prompts, task.reward
    fn = task.log_probs_fn(capacity)
    fn_train = task.log_probs_fn(capacity, train_only=True)
    theta0 = capacity.theta0
    with torch.no_grad():
        logp0 = fn(theta0)
    rho = task.rho()
    A = forward_score_matrix(fn_train, theta0)           # (d, S·A)
    direction = local_rlhf_theta(A, rho, logp0[:S], reward[:S], 1.0, theta0) - theta0
    scores = (A.T @ direction).reshape(S, -1)            # g(a) = ∇log π₀(a|s)ᵀΔ*
    counts = design_counts(
        config.design, rho=rho, probs0=logp0[:S].exp(), reward=reward[:S],
        direction_scores=scores, factor=config.anti_factor,
        skew=config.skew, generator=torch.Generator().manual_seed(10_000 + seed))
    return dict(fn=fn, fn_train=fn_train, theta0=theta0, logp0=logp0, rho=rho, A=A,
                counts=counts, scores=scores)


def exact_rlhf(config, cell: dict, reward: torch.Tensor, beta: float):
    """argmax_θ J(θ; reward) over the cell's trainable set (from θ₀ and the local step)."""
    S = cell["rho"].numel()
    problem = PreferenceProblem(cell["rho"], reward[:S], cell["counts"], beta)
    local = local_rlhf_theta(cell["A"], cell["rho"], cell["logp0"][:S], reward[:S], beta,
                             cell["theta0"])
    fit = fit_rlhf(cell["fn_train"], problem, cell["theta0"], A=cell["A"],
                   starts=[cell["theta0"], local], max_iter=config.max_iter,
                   floor=config.precondition_floor)
    return fit, local


def method_names(config) -> list[tuple[str, str, dict]]:
    """(row name, loss name, solver kwargs) for every method variant of a run (an
    :class:`~auxdpo.harness.oracle.runner.OracleConfig`)."""
    out = []
    for method in config.methods:
        if method != "auxdpo":
            out.append((method, method, {}))
            continue
        variants = []
        for mode in config.aux_modes:
            if mode == "global":
                variants += [(mode, {"mode": mode, "lambda_null": lam}, lam)
                             for lam in config.lambdas]
            else:
                variants.append((mode, {"mode": mode}, None))
        for mode, kwargs, lam in variants:
            name = "auxdpo" if len(variants) == 1 else f"auxdpo-{mode}"
            if lam is not None and len(config.lambdas) > 1:
                name += f"-lam{lam:g}"
            out.append((name, "auxdpo", kwargs))
        if config.relinearise:
            out.append(("auxdpo-relin", "auxdpo", {"relinearise": config.relinearise}))
    return out


def method_variants(config, importance: bool = True) -> list[tuple[str, str, dict]]:
    """(row name, loss, options) of the finite regime's methods: the base methods, then
    AuxDPO per offset key × null weighting × prior scale σ × constraint mode (× λ for
    ``global``), then (``importance``, full-batch only) IW-DPO. A variant's name lists what
    varies (``auxdpo-response-prompt-sigma1``, ``-noprior``); the one with every default
    (response keys, the trainer's weights and σ, the first mode and λ) is ``auxdpo``."""
    finite, out = config.finite, []
    for method in config.methods:
        if method != "auxdpo":
            out.append((method, method, {}))
            continue
        modes = [(m, lam) for m in config.aux_modes
                 for lam in (config.lambdas if m == "global" else [None])]
        for key in finite.aux_offsets:
            for weights in finite.null_weights:
                for scale, half in [(s, h) for s in finite.delta_scales
                                    for h in finite.delta_half_counts]:
                    for mode, lam in modes:
                        options = {"key": key, "weights": weights, "mode": mode,
                                   "delta_scale": scale, "half_count": half}
                        if lam is not None:
                            options["lambda_null"] = lam
                        out.append((_variant_name(config, options), "auxdpo", options))
    if importance and "dpo" in config.methods:
        out.append(("iw-dpo", "dpo", {"importance": True}))
    return out


def _variant_name(config, options: dict) -> str:
    finite = config.finite
    default = (options["key"] == "response" and options["weights"] == DEFAULT_NULL_WEIGHTS
               and options["delta_scale"] == DEFAULT_DELTA_SCALE
               and options["half_count"] == DEFAULT_DELTA_HALF_COUNT
               and options["mode"] == config.aux_modes[0]
               and options.get("lambda_null", config.lambdas[0]) == config.lambdas[0])
    if default:
        return "auxdpo"
    name = "auxdpo"
    if len(finite.aux_offsets) > 1:
        name += f"-{options['key']}"
    if len(finite.null_weights) > 1:
        name += f"-{options['weights']}"
    if len(finite.delta_scales) > 1:
        scale = options["delta_scale"]
        name += ("-noprior" if scale is None else "-sigmaEM" if scale == "em"
                 else f"-sigma{scale:g}")
    if len(finite.delta_half_counts) > 1:
        half = options["half_count"]
        # A constant variance keeps the sweep's names (auxdpo-sigma2, ...) unless that would
        # leave the plain name, which belongs to the defaults.
        name += f"-half{half:g}" if half is not None else "-const" if name == "auxdpo" else ""
    if len(config.aux_modes) > 1:
        name += f"-{options['mode']}"
    if "lambda_null" in options and len(config.lambdas) > 1:
        name += f"-lam{options['lambda_null']:g}"
    return name
