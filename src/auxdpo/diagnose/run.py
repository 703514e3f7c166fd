"""``auxdpo diagnose``: the local model of :mod:`auxdpo.diagnose.local` on a training recipe's
own model, capacity and data, without training.

1. The recipe's model, capacity and data are set up exactly as ``auxdpo train`` does (an
   ``AuxDPOTrainer`` is built, never trained), on at most ``max_pairs`` pairs (whole prompts).
2. Each unique response (the trainer's response keys) gets its score column g_k = ∇log π_θ₀
   over the trainable tensors (one batched Jacobian per batch) and log π_θ₀.
3. r̂ is fitted to the comparisons with a flat Gaussian prior of the offsets' scale σ (the
   recipe's, else the default), and the local model predicts each method's share of RLHF's
   gain, with a bootstrap over prompts.
4. The local model is checked along the predicted RLHF step: the exact log-probs at θ₀ + step
   against θ₀'s first-order prediction, and how far the score matrix moves.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
from typing import Any

import torch

from auxdpo.diagnose.data import data_report
from auxdpo.diagnose.local import (
    Comparisons,
    bootstrap_gaps,
    fit_reward,
    local_model,
    policy_weights,
    reward_precision,
    reward_prior,
)
from auxdpo.diagnose.scores import SKETCH_POWER, score_matrix_of
from auxdpo.train.aux_defaults import DEFAULT_DELTA_SCALE

__all__ = ["HELPS_MARGIN", "LOCAL_LIMIT", "THIN_PAIRS", "diagnose", "diagnose_trainer",
           "subsample_prompts", "verdict"]

# Verdict thresholds (docs/diagnose.md).
LOCAL_LIMIT = 0.5      # linearisation_error above it: the local model does not describe the step
THIN_PAIRS = 4.0       # pairs per response below it: r̂ too uncertain to stand in for the reward
HELPS_MARGIN = 0.1     # predicted AuxDPO − DPO share of RLHF's gain that counts as a help


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


def subsample_prompts(rows, max_pairs: int | None, seed: int = 0):
    """``rows`` (a ``datasets.Dataset``) cut to whole prompts, drawn in a seeded random order,
    while the pairs stay within ``max_pairs`` (at least one prompt)."""
    if max_pairs is None or len(rows) <= max_pairs:
        return rows
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(rows["prompt"]):
        groups.setdefault(_prompt_key(prompt), []).append(index)
    order = list(groups)
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    for key in order:
        if chosen and len(chosen) + len(groups[key]) > max_pairs:
            continue
        chosen.extend(groups[key])
    return rows.select(sorted(chosen))


def verdict(report: dict) -> tuple[str, str]:
    """(``auxdpo-helps`` | ``same`` | ``data-too-thin`` | ``not-local``, the reason); a
    saturated sketch of the scores adds its caveat to the reason."""
    name, reason = _verdict(report)
    scores = report.get("scores", {})
    if scores.get("saturated"):
        reason += (f"; caution: the scores were sketched to {scores['size']} directions "
                   f"({scores['captured']:.1%} of their squared norm), fewer than their rank, "
                   "so these are the predictions of a smaller model, which can be misspecified "
                   "where the real one is not: raise --sketch")
    return name, reason


def _verdict(report: dict) -> tuple[str, str]:
    error = report["linearisation_error"]
    if not math.isfinite(error) or error > LOCAL_LIMIT:
        return "not-local", (f"the first-order model misses {error:.0%} of the log-prob change "
                             "along the RLHF step, so its predictions do not hold for this "
                             "run; on the oracle every point where AuxDPO fell below DPO was "
                             "of this kind (LoRA; docs/diagnose.md): train both methods and "
                             "compare")
    if report["pairs_per_response"] < THIN_PAIRS:
        return "data-too-thin", (f"{report['pairs_per_response']:.2f} pairs per response: too "
                                 "few comparisons for the fitted reward to stand in for the "
                                 "true one (against the oracle the prediction failed at 1.4–2.1 "
                                 "pairs per response and held at 6 and at 60; "
                                 "docs/diagnose.md); "
                                 "with few pairs per response the prior also holds the offsets "
                                 "near 0, so expect AuxDPO close to DPO (README, \"When AuxDPO "
                                 "helps\")")
    gap = report["predicted_gap"]
    spread = report["uncertainty"].get("difference_std", 0.0)
    if gap["auxdpo"] - gap["dpo"] > max(HELPS_MARGIN, 2 * spread):
        return "auxdpo-helps", (f"DPO is predicted to reach {gap['dpo']:.2f} of the local RLHF "
                                f"gain under the fitted reward, AuxDPO {gap['auxdpo']:.2f}")
    return "same", (f"DPO {gap['dpo']:.2f}, AuxDPO {gap['auxdpo']:.2f} of the local RLHF gain: "
                    "no difference beyond the data's uncertainty; DPO is as good here")


def _build_trainer(run_args, config, max_pairs, seed, folder):
    from auxdpo.train.run import load_dataset_rows, load_model_and_tokenizer
    from auxdpo.train.trainer import AuxDPOTrainer

    model, tokenizer = load_model_and_tokenizer(run_args, config)
    rows = load_dataset_rows(run_args, pref_prob_column=config.pref_prob_column,
                             weight_column=config.weight_column)
    total = len(rows)
    rows = subsample_prompts(rows, max_pairs, seed)
    # Never touch the recipe's output folder: the trainer is built, not trained.
    args = copy.deepcopy(config)
    args.output_dir, args.metrics_file, args.report_to = folder, None, []
    trainer = AuxDPOTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer)
    return trainer, total


def _comparisons(trainer, keys) -> Comparisons:
    data = trainer.train_dataset
    n = keys.num_examples
    column = trainer.args.pref_prob_column
    pref = torch.tensor(data[column], dtype=torch.float64) \
        if column and column in data.column_names else torch.ones(n, dtype=torch.float64)
    weight = trainer.args.weight_column
    count = torch.tensor(data[weight], dtype=torch.float64) \
        if weight and weight in data.column_names else torch.ones(n, dtype=torch.float64)
    return Comparisons(keys.prompts, keys.slots[:, 0], keys.slots[:, 1], pref, count)


def _linearisation(products, scores, weights, step) -> tuple[float, float]:
    """Along ``step`` (d,): the D-weighted share of the exact log-prob change the first-order
    model misses, and the relative Frobenius change of the score matrix (one pass: each
    batch's scores at θ₀ and at θ₀ + step)."""
    step = step.to(products.dtype)
    k = weights.numel()
    exact = torch.zeros(k, dtype=torch.float64)
    first_order = torch.zeros(k, dtype=torch.float64)
    moved = 0.0
    for batch, slots, first in scores.batches:
        if not first.numel():
            continue
        index, where = first.to(products.device), slots[first]
        exact[where] = products.logps_at(batch, step)[index].to(torch.float64).cpu() \
            - scores.logp0[where]
        before = scores.reference_rows(products, batch, slots, first)
        first_order[where] = before @ step.to(torch.float64).cpu()
        after = products.jacobian(batch, step, rows=first).to(torch.float64).cpu()
        moved += float((after - before).pow(2).sum())
    scale = float((weights * first_order.pow(2)).sum().sqrt())
    missed = float((weights * (exact - first_order).pow(2)).sum().sqrt())
    error = missed / scale if scale > 0 else math.nan
    shift = moved ** 0.5 / max(scores.norm, 1e-300)
    return error, shift


def diagnose_trainer(trainer, *, bootstrap: int = 20, seed: int = 0,
                     show_progress: bool = True, sketch: int | str = "auto",
                     power: int = SKETCH_POWER) -> dict[str, Any]:
    """The report of ``auxdpo diagnose`` (docs/diagnose.md) for a built, untrained
    ``AuxDPOTrainer`` (its model, capacity, prepared data, β and prior settings). ``sketch``:
    the score matrix's sketch size (0: dense; ``"auto"``: dense when it fits in memory,
    :func:`auxdpo.diagnose.scores.choose_sketch`), ``power`` its power iterations."""
    from auxdpo.train.offsets_training import offset_keys_for
    from auxdpo.train.reference_pass import reference_products

    config = trainer.args
    keys, _ = offset_keys_for(trainer.train_dataset, "response")
    products = reference_products(trainer, truncate=True, jvp_method="forward",
                                  math_attention_vjp=True)
    scores = score_matrix_of(trainer, products, keys, sketch=sketch, power=power, seed=seed,
                             show_progress=show_progress)
    comparisons = _comparisons(trainer, keys)
    report: dict[str, Any] = data_report(comparisons)
    scale, half = config.aux_delta_scale, config.aux_delta_half_count
    tau = reward_precision(comparisons, scale, half)
    reward_scale = scale if scale is not None else DEFAULT_DELTA_SCALE
    reward = fit_reward(comparisons, reward_prior(comparisons, reward_scale))
    weights = policy_weights(comparisons.prompt, scores.logp0)
    coords = scores.coords
    prediction = local_model(coords, comparisons, reward, weights, tau)
    report.update(parameters=products.dim, score_rank=prediction.rank,
                  identified_directions=prediction.identified, null_dim=prediction.null_dim,
                  step_cosine=prediction.step_cosine, predicted_gap=prediction.predicted_gap,
                  beta=trainer.beta, scores=scores.info())
    uncertainty: dict[str, float] = {"rounds": bootstrap}
    if bootstrap > 1:
        draws = bootstrap_gaps(coords, comparisons, weights, scale, half, bootstrap, seed,
                               reward_scale=reward_scale)
        for name, values in draws.items():
            uncertainty[f"{name}_std"] = float(torch.tensor(values).std())
        difference = torch.tensor(draws["auxdpo"]) - torch.tensor(draws["dpo"])
        uncertainty["difference_std"] = float(difference.std())
    report["uncertainty"] = uncertainty
    step = scores.parameter_step(prediction.steps["rlhf"]) / trainer.beta   # θ − θ₀ = U y/β
    report["step_norm"] = float(step.norm())
    report["linearisation_error"], report["score_shift"] = _linearisation(
        products, scores, weights, step)
    report["verdict"], report["reason"] = verdict(report)
    return report


def diagnose(run_args, config, *, max_pairs: int | None = 2000, bootstrap: int = 20,
             seed: int = 0, show_progress: bool = True, sketch: int | str = "auto",
             power: int = SKETCH_POWER) -> dict[str, Any]:
    """The report of ``auxdpo diagnose`` for a resolved recipe: the trainer of ``auxdpo
    train`` is built on at most ``max_pairs`` pairs (whole prompts) and never trained;
    ``sketch``, ``power``: :func:`diagnose_trainer`'s."""
    with tempfile.TemporaryDirectory(prefix="auxdpo-diagnose-") as folder:
        trainer, total = _build_trainer(run_args, config, max_pairs, seed, folder)
        report = diagnose_trainer(trainer, bootstrap=bootstrap, seed=seed,
                                  show_progress=show_progress, sketch=sketch, power=power)
    report["pairs_in_data"] = total
    return report
