"""`auxdpo.diagnose`'s local model against the oracle's true answers on the same samples.

    PYTHONPATH=src .venv/bin/python benchmarks/diagnose_oracle.py [--cells tokens-anti
        tokens-onpolicy] [--pairs 1000 10000 100000] [--seeds 3] [--json out.json]
        [--quick]

For every cell, seed and n the oracle's finite regime (``--finite-solver full-batch``) builds
its task and draws its sample exactly as ``auxdpo oracle`` does
(:func:`auxdpo.harness.oracle.fullbatch.fullbatch_cell`, whose rows give the true
``gap_closed`` of DPO and AuxDPO with the trainer's defaults, under r*). The same sample is then
handed to the diagnostic as a user's data would be: only the responses that occur in it, their
score columns of A_θ₀ (:func:`~auxdpo.diagnose.local.score_coordinates`), their log π_θ₀,
the comparisons with hard labels (chosen first, pref 1), the offsets' prior precisions
(:func:`~auxdpo.diagnose.local.reward_precision`, σ = 2, c½ = 16: the trainer's defaults) and
r̂ (:func:`~auxdpo.diagnose.local.fit_reward`, with the flat prior of scale σ of
:func:`~auxdpo.diagnose.local.reward_prior`, as `auxdpo diagnose` fits it) from those per-row
comparisons. For
:func:`~auxdpo.diagnose.local.local_model` the rows are folded into one row per unordered pair
(count = how often it was drawn): local_model labels every pair by r̂, not by the data, so the
folded loss is the per-row loss exactly, and its cost is that of the distinct pairs.

Summary: sign agreement of predicted and true DPO gap (points with |true| > seed noise, the
noise of a (cell, n) being max(std over seeds of the true DPO gap, 0.05)), Spearman correlation
of predicted and true DPO gap, and the accuracy of the verdict "auxdpo-helps"
(auxdpo − dpo > 0.1, predicted against true).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from diagnose_report import finish, merged

from auxdpo.diagnose.local import (
    Comparisons,
    fit_reward,
    local_model,
    policy_weights,
    reward_precision,
    reward_prior,
    score_coordinates,
)
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup
from auxdpo.harness.oracle.fullbatch import fullbatch_cell, occurrences
from auxdpo.harness.oracle.mmlu import MmluTaskConfig, build_mmlu_task
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.sampling import FiniteConfig, PairSample, sample_pairs
from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task
from auxdpo.train.aux_defaults import DEFAULT_DELTA_HALF_COUNT, DEFAULT_DELTA_SCALE

__all__ = ["CELLS", "diagnose_sample", "oracle_config", "quick", "run", "run_seed",
           "summarise"]

DTYPE = torch.float64
CELLS = {
    "tokens-anti": {"family": "tokens", "capacity": "norm", "design": "anti-aligned"},
    "tokens-onpolicy": {"family": "tokens", "capacity": "norm", "design": "on-policy"},
    "mmlu-head-anti": {"family": "mmlu-choice", "capacity": "head", "design": "anti-aligned"},
}
HELPS = 0.1                  # the verdict's margin: auxdpo − dpo > HELPS
NOISE_FLOOR = 0.05           # the smallest seed noise a (cell, n) is given


def oracle_config(cell: str, pairs: list[int], *, beta: float = 100.0, max_iter: int = 300,
                  task: TokenTaskConfig | None = None, encode_cache: str | None = None
                  ) -> OracleConfig:
    """The `auxdpo oracle --regime finite --finite-solver full-batch --methods dpo auxdpo
    --rm-steps 0` configuration of one cell (the trainer's AuxDPO defaults)."""
    spec = CELLS[cell]
    mmlu = MmluTaskConfig(cache=encode_cache) if encode_cache else MmluTaskConfig()
    return OracleConfig(
        family=spec["family"], regime="finite", design=spec["design"],
        capacities=[spec["capacity"]], betas=[beta], seeds=1, methods=["dpo", "auxdpo"],
        max_iter=max_iter, task=task or TokenTaskConfig(), mmlu=mmlu,
        finite=FiniteConfig(pairs=list(pairs) if len(pairs) > 1 else pairs[0],
                            solver="full-batch", rm_steps=0))


def diagnose_sample(A: torch.Tensor, logp0: torch.Tensor, sample: PairSample,
                    scale: float | None = DEFAULT_DELTA_SCALE,
                    half_count: float | None = DEFAULT_DELTA_HALF_COUNT,
                    true_reward: torch.Tensor | None = None,
                    counted_prior: bool = False) -> dict:
    """The local model on ``sample`` as a user's data: ``A`` ``(d, S·A)`` the scores of every
    response, ``logp0`` ``(S, A)``; only the responses in the sample are used. With
    ``true_reward`` ``(S·A,)`` (``--reward true``) r* on those responses replaces r̂: what the
    prediction would be if the reward fit were exact. ``counted_prior`` (``--reward counted``)
    fits r̂ with the offsets' count-dependent prior instead of the flat one."""
    S, nA = logp0.shape
    seen = torch.nonzero(occurrences(sample, S, nA) > 0).flatten()          # (K,) flat ids
    new_id = torch.full((S * nA,), -1, dtype=torch.long)
    new_id[seen] = torch.arange(seen.numel())
    _, prompt = torch.unique(seen // nA, return_inverse=True)
    first = new_id[sample.state * nA + sample.chosen]
    second = new_id[sample.state * nA + sample.rejected]
    rows = Comparisons(prompt, first, second, torch.ones(len(sample), dtype=DTYPE))
    tau = reward_precision(rows, scale, half_count)
    if true_reward is not None:
        reward = true_reward[seen].to(DTYPE)
    else:
        reward = fit_reward(rows, tau if counted_prior else reward_prior(rows, scale))
    scores = A[:, seen].to(DTYPE)
    coords, _ = score_coordinates(scores)
    weights = policy_weights(prompt, logp0.reshape(-1)[seen])
    lo, hi = torch.minimum(first, second), torch.maximum(first, second)
    pair, count = torch.unique(lo * seen.numel() + hi, return_counts=True)
    a, b = pair // seen.numel(), pair % seen.numel()
    wins = torch.zeros_like(pair, dtype=DTYPE).index_add_(
        0, torch.searchsorted(pair, lo * seen.numel() + hi), (first == lo).to(DTYPE))
    folded = Comparisons(prompt, a, b, wins / count, count.to(DTYPE))
    start = time.time()
    result = local_model(coords, folded, reward, weights, tau)
    return {"pred_dpo": result.predicted_gap["dpo"],
            "pred_auxdpo": result.predicted_gap["auxdpo"],
            "step_cosine": result.step_cosine, "null_dim": result.null_dim,
            "rank": result.rank, "K": int(seen.numel()), "distinct_pairs": int(pair.numel()),
            "diag_seconds": time.time() - start}


def build_task(config: OracleConfig, seed: int):
    return (build_mmlu_task(config.mmlu, seed) if config.family == "mmlu-choice"
            else build_token_task(config.task, seed))


def run_seed(cell: str, config: OracleConfig, seed: int, log=print,
             reward: str = "fitted") -> list[dict]:
    """One (cell, seed): the oracle's rows (every n) and the diagnostic on each n's sample."""
    task = build_task(config, seed)
    spec = config.capacities[0]
    start = time.time()
    truth = fullbatch_cell(config, task, spec, seed, lambda message: None)
    oracle_seconds = time.time() - start
    capacity = (task.capacity(spec) if config.family == "mmlu-choice"
                else FlatCapacity(task.model, spec, seed=seed))
    setup = cell_setup(config, task, capacity, seed)
    S = task.num_prompts
    # fullbatch_cell's draw for i.i.d. pairs from the design with hard labels (the seen-count
    # check below fails if it drew another sample)
    assert config.finite.sampler == "design" and not config.finite.responses_per_prompt
    assert config.finite.labels == "hard"
    out = []
    for n in config.finite.pair_counts:
        sample = sample_pairs(setup["counts"], task.reward[:S], n,
                              torch.Generator().manual_seed(20_000 + seed))
        rows = {r["method"]: r for r in truth if r["pairs"] == n}
        seen = int((occurrences(sample, S, setup["logp0"].shape[1]) > 0).sum())
        if seen != rows["dpo"]["seen"]:
            raise RuntimeError(f"{cell} seed {seed} n={n}: not the oracle's sample")
        pred = diagnose_sample(setup["A"], setup["logp0"][:S], sample,
                               true_reward=(task.reward[:S].reshape(-1) if reward == "true"
                                            else None),
                               counted_prior=reward == "counted")
        point = {"cell": cell, "seed": seed, "pairs": n, **pred,
                 "true_dpo": rows["dpo"]["gap_closed"],
                 "true_auxdpo": rows["auxdpo"]["gap_closed"],
                 "oracle_seconds": oracle_seconds}
        log(f"{cell:15s} n={n:<6d} seed {seed}: pred dpo {point['pred_dpo']:+.3f} "
            f"aux {point['pred_auxdpo']:+.3f} | true dpo {point['true_dpo']:+.3f} "
            f"aux {point['true_auxdpo']:+.3f} | cos {point['step_cosine']:+.3f} "
            f"null {point['null_dim']} K {point['K']} ({point['diag_seconds']:.1f} s)")
        out.append(point)
    return out


def summarise(points: list[dict]) -> dict:
    """Sign agreement, Spearman and the verdict's accuracy (module docstring)."""
    from scipy.stats import spearmanr

    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["cell"], p["pairs"]), []).append(p)
    table, signed = [], []
    for (cell, n), members in groups.items():
        true = torch.tensor([p["true_dpo"] for p in members], dtype=DTYPE)
        noise = max(float(true.std(unbiased=False)) if true.numel() > 1 else 0.0, NOISE_FLOOR)
        mean = {k: sum(p[k] for p in members) / len(members)
                for k in ("pred_dpo", "true_dpo", "pred_auxdpo", "true_auxdpo",
                          "step_cosine", "null_dim")}
        table.append({"cell": cell, "pairs": n, "seeds": len(members), "noise": noise, **mean})
        signed += [p for p in members if abs(p["true_dpo"]) > noise]
    agree = [math.copysign(1, p["pred_dpo"]) == math.copysign(1, p["true_dpo"])
             for p in signed]
    pred = [p["pred_dpo"] for p in points]
    true = [p["true_dpo"] for p in points]
    rho_all = float(spearmanr(pred, true).statistic) if len(points) > 2 else math.nan
    rho_means = (float(spearmanr([t["pred_dpo"] for t in table],
                                 [t["true_dpo"] for t in table]).statistic)
                 if len(table) > 2 else math.nan)
    verdict = [(p["pred_auxdpo"] - p["pred_dpo"] > HELPS) == (p["true_auxdpo"] - p["true_dpo"]
                                                              > HELPS) for p in points]
    helps = sum(p["true_auxdpo"] - p["true_dpo"] > HELPS for p in points)
    return {"table": table,
            "sign_points": len(signed), "sign_agree": sum(agree),
            "sign_agreement": sum(agree) / len(agree) if agree else math.nan,
            "spearman_points": rho_all, "spearman_means": rho_means,
            "verdict_points": len(points), "verdict_right": sum(verdict),
            "verdict_accuracy": sum(verdict) / len(verdict) if verdict else math.nan,
            "true_helps": helps}


def run(cells: list[str], pairs: list[int], seeds: int, first_seed: int = 0, *,
        max_iter: int = 300, task: TokenTaskConfig | None = None,
        encode_cache: str | None = None, log=print, reward: str = "fitted") -> dict:
    torch.set_num_threads(1)
    points = []
    for cell in cells:
        config = oracle_config(cell, pairs, max_iter=max_iter, task=task,
                               encode_cache=encode_cache)
        for seed in range(first_seed, first_seed + seeds):
            points += run_seed(cell, config, seed, log, reward)
    return {"points": points, "summary": summarise(points)}


def quick(task: TokenTaskConfig | None = None, pairs: int = 1000, seed: int = 0,
          log=print) -> dict:
    """``--quick``: tokens, anti-aligned, β = 100, one n, one seed."""
    return run(["tokens-anti"], [pairs], 1, seed, task=task, log=log)


def print_summary(result: dict) -> None:
    s = result["summary"]
    print("\n| cell | n | seeds | pred dpo | true dpo | pred auxdpo | true auxdpo | cos | "
          "null dim |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in s["table"]:
        print(f"| {t['cell']} | {t['pairs']} | {t['seeds']} | {t['pred_dpo']:+.3f} | "
              f"{t['true_dpo']:+.3f} | {t['pred_auxdpo']:+.3f} | {t['true_auxdpo']:+.3f} | "
              f"{t['step_cosine']:+.3f} | {t['null_dim']:.0f} |")
    print(f"\nsign agreement (|true dpo| > seed noise): {s['sign_agree']}/{s['sign_points']}"
          f" = {s['sign_agreement']:.3f} (target >= 0.9)")
    print(f"Spearman(pred dpo, true dpo): per-seed points {s['spearman_points']:.3f}, "
          f"(cell, n) means {s['spearman_means']:.3f} (target >= 0.8)")
    print(f"verdict auxdpo-helps (> {HELPS}): right {s['verdict_right']}/"
          f"{s['verdict_points']} = {s['verdict_accuracy']:.3f} "
          f"(true helps at {s['true_helps']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["tokens-anti", "tokens-onpolicy"],
                        choices=sorted(CELLS))
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--reward", choices=("fitted", "true", "counted"), default="fitted",
                        help="r̂ fitted to the sample (what auxdpo diagnose does), r* on the "
                             "sample's responses (the prediction with an exact fit), or r̂ "
                             "fitted with the offsets' count-dependent prior")
    parser.add_argument("--encode-cache", help="mmlu-choice: file keeping encoded questions")
    parser.add_argument("--json", help="write points and summary to this file")
    parser.add_argument("--quick", action="store_true",
                        help="tokens anti-aligned, n = 1000, seed 0 only")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="summarise the points of earlier --json files (runs nothing)")
    args = parser.parse_args()
    start = time.time()
    if args.merge:
        result = merged(args.merge, summarise)
    elif args.quick:
        result = quick()
    else:
        result = run(args.cells, args.pairs, args.seeds, args.first_seed,
                     max_iter=args.max_iter, encode_cache=args.encode_cache,
                     reward=args.reward)
    finish(result, start, print_summary, args.json)


if __name__ == "__main__":
    main()

