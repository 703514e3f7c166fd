"""``auxdpo eval``: score a model against its base on preference data, with % change vs base.

    auxdpo eval --model RUN_DIR_OR_NAME [--base-model NAME] --data PATH --format FORMAT
                [--held-out] [--limit N] [--generate] [--beta B] [--json OUT.json]

Formats: ``ultrafeedback`` (pairwise accuracy), ``rewardbench2`` (pairwise accuracy + the
official best-of-N score per subset and their unweighted mean), ``mmlu-pro`` (pairwise
accuracy + per-subject accuracy by highest option log-likelihood; ``--generate`` adds the
accuracy of the generated answer letter, as in the paper's Table 2). Pairwise accuracy is
reported two ways, labeled: by policy log-prob, and by implicit reward β·log π/π_ref.

Every table row gives the base model's score, the model's score and the percentage change
``100·(model − base)/base``. The base is ``--base-model``, or the base named by an ``auxdpo
train`` run folder (``auxdpo_config.yaml``) or a PEFT adapter. Heavy imports happen in the
handler.
"""

from __future__ import annotations

import json

from auxdpo.argtypes import finite_positive_float, positive_int

__all__ = ["register", "eval_rows", "format_eval_tables"]

FORMATS = ("ultrafeedback", "rewardbench2", "mmlu-pro")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="pairwise / RewardBench 2 / MMLU-Pro accuracy vs the base model",
        description=__doc__.split("\n\n")[2])
    parser.add_argument("--model", required=True, help="hub name, model or PEFT adapter folder, "
                        "`auxdpo train` run folder, or tiny-<arch>")
    parser.add_argument("--base-model", help="the reference model (default: the run's base)")
    parser.add_argument("--data", required=True, help="data file or hub name")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="data_format")
    parser.add_argument("--split", default=None, help="hub split (default: the loader's)")
    parser.add_argument("--held-out", action="store_true", help="score only the held-out 20%% "
                        "of the 80/20 split by prompt (the protocol's evaluation rows)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of that split")
    parser.add_argument("--limit", type=positive_int, help="use only the first N rows")
    parser.add_argument("--generate", action="store_true",
                        help="MMLU-Pro: also generate answers and score the extracted letter")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32)
    parser.add_argument("--beta", type=finite_positive_float, default=0.1,
                        help="β of the implicit reward")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--max-length", type=positive_int, default=2048,
                        help="max tokens scored (clamped to the models' position limit)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--json", help="also write every metric to this JSON file")
    parser.set_defaults(func=_handle)


def eval_rows(data: str, data_format: str, *, split: str | None = None, held_out: bool = False,
              split_seed: int = 0, limit: int | None = None):
    """The :class:`~auxdpo.harness.evaluation.scoring.HeldOut` set to score (pairs, and best-of-N rows or
    MMLU-Pro questions)."""
    from auxdpo.data import (
        load_mmlu_pro,
        load_rewardbench2,
        load_ultrafeedback,
        mmlu_pro_pairs,
        rewardbench2_pairs,
        split_by_prompt,
    )
    from auxdpo.harness.evaluation.scoring import HeldOut

    loaders = {"ultrafeedback": load_ultrafeedback, "rewardbench2": load_rewardbench2,
               "mmlu-pro": load_mmlu_pro}
    rows = loaders[data_format](data, split) if split else loaders[data_format](data)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    if held_out:
        rows = split_by_prompt(rows, seed=split_seed)[1]
    if data_format == "ultrafeedback":
        return HeldOut(data_format, list(rows), [])
    make_pairs = rewardbench2_pairs if data_format == "rewardbench2" else mmlu_pro_pairs
    mode = "all" if data_format == "rewardbench2" else "sample"
    return HeldOut(data_format, list(make_pairs(rows, mode=mode, seed=split_seed)), list(rows))


def _line(name: str, base: float | None, score: float | None) -> str:
    def pct(value):
        return "—" if value is None else f"{100 * value:.2f}"

    change = "n/a" if base in (None, 0) or score is None else \
        f"{100 * (score - base) / base:+.2f}%"
    return f"| {name} | {pct(base)} | {pct(score)} | {change} |"


def _table(title: str, lines: list[str]) -> str:
    return "\n".join([f"### {title}", "", "| | base | model | relative change vs base |",
                      "|---|---|---|---|", *lines, ""])


def format_eval_tables(model_metrics: dict, base_metrics: dict) -> str:
    """Markdown tables (scores in %) of :func:`auxdpo.harness.evaluation.scoring.compute_metrics` output.

    The implicit-reward row's base is the base's log-prob accuracy (its own implicit reward is
    identically 0).
    """
    pair, base_pair = model_metrics["pairwise"], base_metrics["pairwise"]
    out = [_table(f"Pairwise accuracy ({pair['n_pairs']} pairs)", [
        _line("log-prob accuracy (chosen has higher log π)", base_pair["logp_accuracy"],
              pair["logp_accuracy"]),
        _line("implicit-reward accuracy (higher β·log π/π_ref)", base_pair["logp_accuracy"],
              pair["implicit_reward_accuracy"])])]
    if "rewardbench2" in model_metrics:
        mine, base = model_metrics["rewardbench2"], base_metrics["rewardbench2"]["logp"]
        lines = [_line(f"{name} ({mine['logp']['counts'][name]} prompts)",
                       base["subsets"][name], score)
                 for name, score in mine["logp"]["subsets"].items()]
        lines.append(_line(f"mean of {len(mine['logp']['subsets'])} subsets", base["mean"],
                           mine["logp"]["mean"]))
        if mine.get("implicit_reward"):
            lines.append(_line("mean, implicit reward as score", base["mean"],
                               mine["implicit_reward"]["mean"]))
        out.append(_table("RewardBench 2 official score (best-of-N, log-prob as score)", lines))
    for kind, title in (("options", "highest option log-likelihood"),
                        ("generation", "generated answer letter")):
        mine = model_metrics.get("mmlu_pro", {}).get(kind)
        if not mine:
            continue
        base = base_metrics["mmlu_pro"][kind]
        lines = [_line(f"{name} ({mine['counts'][name]})", base["per_category"][name], score)
                 for name, score in mine["per_category"].items()]
        lines.append(_line("overall (micro average)", base["overall"], mine["overall"]))
        out.append(_table(f"MMLU-Pro accuracy per subject, {title}", lines))
    return "\n".join(out)


def _handle(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from auxdpo.files import atomic_write_text
    from auxdpo.harness.evaluation.models import base_spec_of_run, load_model_for_eval
    from auxdpo.harness.evaluation.scoring import compute_metrics, score_model
    from auxdpo.lengths import clamp_to_positions

    if args.generate and args.data_format != "mmlu-pro":
        raise ValueError("--generate applies to --format mmlu-pro only")
    if args.json and os.path.isdir(args.json):
        raise ValueError(f"--json {args.json} is a folder; name a file")
    base_name = args.base_model
    base_spec = None
    if base_name is None and os.path.isdir(args.model):
        base_spec = base_spec_of_run(args.model)
    if base_name is None and base_spec is None:
        raise ValueError("no base model: pass --base-model (the model folder names none)")
    held = eval_rows(args.data, args.data_format, split=args.split, held_out=args.held_out,
                     split_seed=args.split_seed, limit=args.limit)
    options = dict(batch_size=args.batch_size, max_length=args.max_length,
                   generate=args.generate, max_new_tokens=args.max_new_tokens)
    policy = load_model_for_eval(args.model, args.dtype)
    options["max_length"] = clamp_to_positions(args.max_length, policy.model, "eval")
    policy_scores = score_model(policy.model, policy.tokenizer, held, label="model", **options)
    del policy
    base = load_model_for_eval(base_name or base_spec.name_or_path, args.dtype, tiny=base_spec)
    if clamp_to_positions(options["max_length"], base.model, "eval") != options["max_length"]:
        # Both models must score the same tokens: rescore the policy at the base's limit.
        options["max_length"] = clamp_to_positions(options["max_length"], base.model, "eval")
        policy = load_model_for_eval(args.model, args.dtype)
        policy_scores = score_model(policy.model, policy.tokenizer, held, label="model",
                                    **options)
        del policy
    base_scores = score_model(base.model, base.tokenizer, held, label="base", **options)
    model_metrics = compute_metrics(held, policy_scores, base_scores, beta=args.beta)
    base_metrics = compute_metrics(held, base_scores, None, beta=args.beta)
    print(f"model: {args.model}\nbase: {base_name or base_spec.name_or_path}\n"
          f"data: {args.data} ({args.data_format}{', held-out 20%' if args.held_out else ''}; "
          f"{len(held.rows) or len(held.pairs)} rows, {len(held.pairs)} pairs)\n")
    print(format_eval_tables(model_metrics, base_metrics))
    if args.json:
        atomic_write_text(args.json, json.dumps({"model": args.model, "base": base_name or
                                                 base_spec.name_or_path, "data": args.data,
                                                 "format": args.data_format,
                                                 "model_metrics": model_metrics,
                                                 "base_metrics": base_metrics}, indent=1) + "\n")
        print(f"json: {args.json}")
    return 0
