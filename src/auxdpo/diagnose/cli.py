"""``auxdpo diagnose --config RUN.yaml [--json] [--max-pairs N] [--bootstrap B]``: before any
GPU hour, whether DPO is misspecified on the recipe's model, capacity and data
(docs/diagnose.md). The recipe is the one ``auxdpo train`` takes; nothing is trained or
written. ``--key value`` pairs override recipe keys as in ``auxdpo train``."""

from __future__ import annotations

import json

from auxdpo.train.cli import OverridesParser

__all__ = ["register", "render"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "diagnose", help="predict, without training, whether AuxDPO will beat DPO on a recipe",
        description="Set up the recipe of `auxdpo train` (model, capacity, data, β, AuxDPO "
                    "settings) without training; fit a reward to the comparisons; predict "
                    "DPO's and AuxDPO's share of the local RLHF gain; check that the local "
                    "model holds along the step. Example: auxdpo diagnose --config "
                    "examples/tiny_auxdpo.yaml --json")
    parser.__class__ = OverridesParser
    parser.add_argument("--config", required=True, help="the flat YAML recipe of auxdpo train")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--max-pairs", type=int, default=2000,
                        help="at most this many pairs, whole prompts drawn at random "
                             "(default 2000)")
    parser.add_argument("--sketch", default="auto",
                        help="score matrix (parameters × responses): 'auto' holds it whole "
                             "when it fits in 2 GiB (float64), else sketches it with as many "
                             "columns as 4 GiB holds, at most one per response (exact); N "
                             "sketches to N columns (fewer than the rank: a smaller model); "
                             "0 always holds it whole")
    parser.add_argument("--power", type=int, default=1,
                        help="power iterations of the sketch (one pass over the data each; "
                             "default 1)")
    parser.add_argument("--bootstrap", type=int, default=20,
                        help="resamplings of the prompts for the uncertainty (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_handle, overrides=[])


def render(report: dict) -> str:
    """The human-readable report."""
    gap, spread = report["predicted_gap"], report["uncertainty"]
    lines = [
        f"data: {report['pairs']} pairs over {report['prompts']} prompts"
        f" ({report['pairs_in_data']} in the data), {report['unique_responses']} unique "
        f"responses, {report['pairs_per_response']:.2f} pairs per response, "
        f"{report['shared_share']:.0%} in two or more pairs, "
        f"{report['separable_share']:.0%} won or lost every comparison, "
        f"{report['components_per_prompt']:.2f} comparison components per prompt",
        f"room for misspecification: score rank {_rank(report)} of "
        f"{report['identified_directions']} identified reward directions over "
        f"{report['parameters']} trainable parameters: null space {_null(report)}"
        + _sketch_note(report),
        f"predicted share of the local RLHF gain under the fitted reward: DPO "
        f"{gap['dpo']:.2f}" + (f" ± {spread['dpo_std']:.2f}" if "dpo_std" in spread else "")
        + f", AuxDPO {gap['auxdpo']:.2f}"
        + (f" ± {spread['auxdpo_std']:.2f}" if "auxdpo_std" in spread else "")
        + f"; cosine(DPO step, RLHF step) {report['step_cosine']:.2f}",
        f"local model along the RLHF step: misses {report['linearisation_error']:.1%} of the "
        f"log-prob change; the scores move {report['score_shift']:.1%}",
        f"verdict: {report['verdict']} — {report['reason']}",
    ]
    return "\n".join(lines)


def _rank(report: dict) -> str:
    saturated = report.get("scores", {}).get("saturated", False)
    return f"≥ {report['score_rank']}" if saturated else str(report["score_rank"])


def _null(report: dict) -> str:
    saturated = report.get("scores", {}).get("saturated", False)
    return f"≤ {report['null_dim']}" if saturated else str(report["null_dim"])


def _sketch_note(report: dict) -> str:
    scores = report.get("scores", {})
    if scores.get("method") != "sketch":
        return ""
    return (f" (scores sketched to {scores['size']} directions, which hold "
            f"{scores['captured']:.1%} of their squared norm)")


def _handle(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from auxdpo.diagnose.run import diagnose
    from auxdpo.train.recipe_check import resolve_recipe

    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError(f"--max-pairs must be >= 1, got {args.max_pairs}")
    if args.sketch != "auto" and not (args.sketch.isdigit()):
        raise ValueError(f"--sketch must be 'auto' or a whole number >= 0, got {args.sketch!r}")
    if args.power < 0:
        raise ValueError(f"--power must be >= 0, got {args.power}")
    run_args, config = resolve_recipe(args.config, args.overrides)
    sketch = args.sketch if args.sketch == "auto" else int(args.sketch)
    report = diagnose(run_args, config, max_pairs=args.max_pairs, bootstrap=args.bootstrap,
                      seed=args.seed, show_progress=not args.json, sketch=sketch,
                      power=args.power)
    print(json.dumps(report, indent=1, default=float) if args.json else render(report))
    return 0
