"""``auxdpo oracle``: do the methods reach the exact RLHF optimum on a real transformer?

No heavy imports at module top (``auxdpo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import time

from auxdpo.argtypes import finite_positive_float

__all__ = ["FINITE_FLAGS", "MMLU_FIELDS", "PRESETS", "TASK_FLAGS", "register"]

# Presets override the defaults; explicit flags override presets.
PRESETS = {
    # max_iter 400: every quick solve converges (the slowest took 282 iterations).
    "quick": {"design": "anti-aligned", "capacities": ["norm"], "betas": [100.0], "seeds": 3,
              "max_iter": 400},
    "full": {"design": "anti-aligned", "capacities": ["norm", "lora:1", "lora:4"],
             "betas": [1.0, 10.0, 100.0, 1000.0], "seeds": 10,
             "aux_modes": ["projection", "global"], "lambdas": [1e2, 1e4, 1e6],
             "max_iter": 400, "precondition_floor": 1e-3},
}
_MMLU_PRESET_CAPACITIES = {"quick": ["head"], "full": ["head", "norm"]}
# MiniLM's head converges slowly along its flat directions: AuxDPO's quick solves took up to
# 2650 iterations (the result is the same at 400, but not converged there).
_MMLU_PRESET_MAX_ITER = {"quick": 3000}
TASK_FLAGS = {"vocab_size": "vocab_size", "response_length": "response_length",
              "prompt_length": "prompt_length", "prompts": "num_prompts",
              "heldout": "num_heldout", "hidden": "hidden_size", "layers": "num_layers",
              "warmup_steps": "warmup_steps", "reward": "reward"}
_MMLU_FLAGS = (("questions", int, "questions drawn per seed, split 80/20 (100)"),
               ("mmlu-reward", str, "binary (1 correct, 0 else) or graded (cosine to correct)"),
               ("mmlu-data", str, "MMLU-Pro file or hub name (default: "
                "$AUXDPO_DATA_DIR/mmlu_pro/test.json when set, else TIGER-Lab/MMLU-Pro)"),
               ("max-length", int, "tokens per question [SEP] option pair (128)"),
               ("logit-spread", float, "within-question std of θ₀'s logits (1.0)"),
               ("encode-cache", str, "file keeping encoded questions across runs"))
MMLU_FIELDS = (("questions", "num_questions"), ("mmlu_reward", "reward"),
               ("mmlu_data", "data"), ("max_length", "max_length"),
               ("logit_spread", "logit_spread"), ("encode_cache", "cache"))
# Finite-sample regime (auxdpo.harness.oracle.sampling.FiniteConfig): flag, type, help; dest = field.
FINITE_FLAGS = (("sampler", str, "design: pairs from the design's counts (with "
                                 "--responses-per-prompt: responses from the design's "
                                 "marginal); policy: s ~ ρ, a ≠ a' ~ π₀; disagreeing "
                                 "(groups): π₀ groups kept with probability K^(m−M), m of "
                                 "their M pairs against the local RLHF direction (design)"),
                ("group-factor", float, "disagreeing groups: K per disagreeing pair (10)"),
                ("labels", str, "hard: BTL(r*) draws; soft: ratings r* + noise, chosen the "
                                "higher, p = σ(Δrating/T) (hard)"),
                ("label-noise", float, "soft labels: rating noise std (0.5)"),
                ("label-temperature", float, "soft labels: T (1)"),
                ("responses-per-prompt", int, "k: prompts with k responses each from the "
                                              "behaviour policy, every pair labelled (0: "
                                              "i.i.d. pairs)"),
                ("epochs", float, "trainer epochs (20)"),
                ("lr", float, "trainer learning rate (1e-2, linear decay)"),
                ("batch-size", int, "trainer batch size (100)"),
                ("delta-lr", float, "AuxDPO's δ learning rate (0.1)"),
                ("lambda-amp", float, "AuxDPO batch mode's amplitude weight λ_amp (0)"),
                ("rm-steps", int, "reward model: full-batch Adam steps (200; 0: no rlhf_2stage)"))


def _half_count(text: str) -> float | None:
    """``--aux-delta-half-count``: a positive number or ``none``."""
    return None if text.lower() in ("none", "null") else finite_positive_float(text)


def _scale(text: str) -> float | str | None:
    """``--aux-delta-scale``: a positive number, ``none`` or ``em``."""
    if text.lower() in ("none", "null"):
        return None
    if text.lower() == "em":
        return "em"
    return finite_positive_float(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``oracle`` to the ``auxdpo`` parser."""
    p = subparsers.add_parser(
        "oracle", help="exact RLHF optimum vs DPO/IPO/DPOP/AuxDPO on enumerable tasks",
        description="Population-regime oracle benchmark on a tiny GPT-2 whose responses (every "
                    "token string of length L) are enumerated: exact RLHF optimum over the "
                    "same trainable parameters, local RLHF (Eq. 5), and each method's "
                    "population minimiser; prints a table (or --json) and writes results.json"
                    ", results.md and plots to --out.")
    p.add_argument("--preset", choices=sorted(PRESETS), help="quick: 3 seeds, norm (mmlu-choice: "
                   "head), β=100, anti-aligned, every solve converged (about 40 s on 2 cores; "
                   "mmlu-choice 80 s); full: the documented grid")
    p.add_argument("--family", choices=["tokens", "mmlu-choice"],
                   help="task family (default tokens; mmlu-choice: MiniLM on MMLU-Pro, "
                        "capacities head / norm)")
    p.add_argument("--regime", choices=["population", "finite"],
                   help="data regime (default population; finite: n sampled pairs, the trainer "
                        "itself, plus rlhf_2stage)")
    p.add_argument("--design", choices=["anti-aligned", "on-policy", "uniform", "skew"])
    p.add_argument("--capacity", nargs="+", dest="capacities", metavar="SPEC",
                   help="norm, lora:<r>, last-block, full, regex:<p> (several = a sweep)")
    p.add_argument("--beta", nargs="+", type=finite_positive_float, dest="betas", metavar="B")
    p.add_argument("--seeds", type=int, help="number of seeds (10; quick: 3)")
    p.add_argument("--first-seed", type=int, help="first seed (0)")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="a subset of the paper's methods, auxdpo.losses.PAPER_METHODS (default: all; "
                        "an unknown name is an error that lists them)")
    p.add_argument("--aux-modes", nargs="+", choices=["projection", "global", "batch"],
                   help="AuxDPO constraint modes (batch: finite regime only)")
    p.add_argument("--lambdas", nargs="+", type=float, metavar="L",
                   help="λ of AuxDPO's global penalty λ‖A_ρδ‖² (a sweep when several)")
    p.add_argument("--anti-factor", type=float, help="K of the anti-aligned design (1000)")
    p.add_argument("--skew", type=float, help="σ of the skew design (1.0)")
    p.add_argument("--dpop-lambda", type=float, help="DPOP's λ (50)")
    p.add_argument("--max-iter", type=int, help="L-BFGS iterations per solve")
    p.add_argument("--precondition-floor", type=float,
                   help="relative eigenvalue floor of the preconditioners (1e-9; LoRA: 1e-3)")
    p.add_argument("--restarts", type=int,
                   help="solver rounds of --max-iter iterations; later rounds re-centre and "
                        "re-precondition at the current point (1; LoRA grid cells: 4)")
    p.add_argument("--restart-floor", type=float,
                   help="eigenvalue floor of the later rounds (default: --precondition-floor)")
    p.add_argument("--relinearise", type=int, metavar="K",
                   help="also run AuxDPO re-solved K rounds, each with its null space at the "
                        "previous round's θ (row auxdpo-relin; population regime)")
    for flag, help_text in (("vocab-size", "V (6)"), ("response-length", "L (3)"),
                            ("prompt-length", "P (3)"), ("prompts", "training prompts (16)"),
                            ("heldout", "held-out prompts (4)"), ("hidden", "GPT-2 width (32)"),
                            ("layers", "GPT-2 blocks (2)"),
                            ("warmup-steps", "supervised warm-up steps (30)")):
        p.add_argument(f"--{flag}", type=int, help=help_text)
    p.add_argument("--reward", choices=["structured", "random"], help="r* family")
    for flag, kind, help_text in _MMLU_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=f"mmlu-choice: {help_text}")
    for flag, kind, help_text in FINITE_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=f"finite: {help_text}")
    p.add_argument("--pairs", type=int, nargs="+", metavar="N",
                   help="finite: n sampled preference pairs per seed (1000); several N are "
                        "an n-sweep (full-batch solver)")
    p.add_argument("--finite-solver", choices=["trainer", "full-batch"], dest="solver",
                   help="finite: trainer (each method trained by AuxDPOTrainer; default) or "
                        "full-batch (the exact minimiser of each empirical loss; seconds per "
                        "solve at any n)")
    p.add_argument("--aux-offsets", nargs="+", choices=["response", "row"],
                   help="finite: AuxDPO's offset keys (response: one δ per prompt-response, "
                        "the default; row: one per pair side); both: rows auxdpo (the defaults) and "
                        "auxdpo-row")
    p.add_argument("--aux-null-weights", nargs="+", dest="null_weights",
                   choices=["multiplicity", "reference", "prompt"],
                   help="finite: weights of AuxDPO's empirical constraint (multiplicity)")
    p.add_argument("--aux-delta-scale", nargs="+", dest="delta_scales", metavar="S",
                   type=_scale,
                   help="finite: σ of AuxDPO's Gaussian prior on each offset, the trainer's "
                        "aux_delta_scale (its default); none: no prior; em: estimated from "
                        "the data (full-batch, a research item); several: one row each")
    p.add_argument("--aux-delta-half-count", nargs="+", dest="delta_half_counts",
                   metavar="C", type=_half_count,
                   help="finite: c½ of a count-dependent prior, the trainer's "
                        "aux_delta_half_count: a response in c comparisons gets variance "
                        "σ²·c/(c + c½) (its default); none: σ² for every response")
    p.add_argument("--out", help="run directory (default runs/oracle-<time>)")
    p.add_argument("--json", action="store_true",
                   help='print {"gap_closed": {method: {"mean", "std"}}, "reward", "kl", '
                        '"reversal", "heldout_acc", "headline", "cells", "seconds", "run_dir"}')
    p.add_argument("--quiet", action="store_true", help="no per-solve progress on stderr")
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace):
    """OracleConfig from a preset and the explicit flags (flags win)."""
    from auxdpo.harness.oracle.mmlu import MmluTaskConfig
    from auxdpo.harness.oracle.runner import OracleConfig
    from auxdpo.harness.oracle.tasks import TokenTaskConfig

    values = dict(PRESETS.get(args.preset or "", {}))
    for key in ("family", "regime", "design", "capacities", "betas", "seeds", "methods",
                "aux_modes", "lambdas", "anti_factor", "first_seed", "skew", "dpop_lambda", "max_iter",
                "precondition_floor", "restarts", "restart_floor", "relinearise"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    if values.get("family") == "mmlu-choice" and args.capacities is None:
        # The tokens presets' capacities do not exist for MiniLM; `head` is the misspecified one.
        values["capacities"] = _MMLU_PRESET_CAPACITIES.get(args.preset or "", ["head"])
    if values.get("family") == "mmlu-choice" and args.max_iter is None \
            and args.preset in _MMLU_PRESET_MAX_ITER:
        values["max_iter"] = _MMLU_PRESET_MAX_ITER[args.preset]
    task = {field: getattr(args, flag) for flag, field in TASK_FLAGS.items()
            if getattr(args, flag, None) is not None}
    mmlu = {field: getattr(args, dest) for dest, field in MMLU_FIELDS
            if getattr(args, dest, None) is not None}
    from auxdpo.harness.oracle.sampling import FiniteConfig

    names = [flag.replace("-", "_") for flag, _, _ in FINITE_FLAGS]
    names += ["solver", "aux_offsets", "null_weights", "delta_scales", "delta_half_counts"]
    finite = {name: getattr(args, name) for name in names
              if getattr(args, name, None) is not None}
    if getattr(args, "pairs", None) is not None:
        finite["pairs"] = args.pairs[0] if len(args.pairs) == 1 else list(args.pairs)
    return OracleConfig(task=TokenTaskConfig(**task), mmlu=MmluTaskConfig(**mmlu),
                        finite=FiniteConfig(**finite), **values)


def _run(args: argparse.Namespace) -> int:
    import sys

    from auxdpo.harness.oracle.outputs import capped_note, headline, markdown_table, write_outputs
    from auxdpo.harness.oracle.runner import run_oracle

    config = build_config(args)
    run_dir = args.out or f"runs/oracle-{time.strftime('%Y%m%d-%H%M%S')}"
    log = (lambda message: None) if args.quiet else (
        lambda message: print(message, file=sys.stderr, flush=True))
    import contextlib

    from auxdpo.locks import output_folder

    # Libraries the trainer loads (accelerate/deepspeed) log to stdout; keep stdout for --json.
    with output_folder(run_dir, "auxdpo oracle"), contextlib.redirect_stdout(sys.stderr):
        result = run_oracle(config, log=log, on_partial=lambda partial: write_outputs(
            partial, run_dir, plots=False))
        paths = write_outputs(result, run_dir)
    if args.json:
        note = capped_note(result["summary"])
        if note:
            print(note, file=sys.stderr)
        answer = headline(result)
        if isinstance(answer, list):                          # an n-sweep: one per n
            print(json.dumps([{**a, "run_dir": run_dir} for a in answer]))
        else:
            print(json.dumps({**answer, "run_dir": run_dir}))
    else:
        print(markdown_table(result["summary"]), end="")
        print(f"wrote {', '.join(paths)} ({result['seconds']:.0f} s)")
    return 0
