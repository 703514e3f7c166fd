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
                             "(default 2000; memory grows with parameters × responses)")
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
        f"room for misspecification: score rank {report['score_rank']} of "
        f"{report['identified_directions']} identified reward directions over "
        f"{report['parameters']} trainable parameters: null space {report['null_dim']}",
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


def _handle(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from auxdpo.diagnose.run import diagnose
    from auxdpo.train.recipe_check import resolve_recipe

    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError(f"--max-pairs must be >= 1, got {args.max_pairs}")
    run_args, config = resolve_recipe(args.config, args.overrides)
    report = diagnose(run_args, config, max_pairs=args.max_pairs, bootstrap=args.bootstrap,
                      seed=args.seed, show_progress=not args.json)
    print(json.dumps(report, indent=1, default=float) if args.json else render(report))
    return 0
