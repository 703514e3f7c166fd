"""``auxdpo oracle``: do the methods reach the exact RLHF optimum on a real transformer?

No heavy imports at module top (``auxdpo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import time

__all__ = ["PRESETS", "register"]

# Presets override the defaults; explicit flags override presets.
PRESETS = {
    "quick": {"design": "anti-aligned", "capacities": ["norm"], "betas": [100.0], "seeds": 3,
              "max_iter": 150},
    "full": {"design": "anti-aligned", "capacities": ["norm", "lora:1", "lora:4"],
             "betas": [1.0, 10.0, 100.0, 1000.0], "seeds": 10,
             "aux_modes": ["projection", "global"], "lambdas": [1e2, 1e4, 1e6],
             "max_iter": 400, "precondition_floor": 1e-3},
}
_TASK_FLAGS = {"vocab_size": "vocab_size", "response_length": "response_length",
               "prompt_length": "prompt_length", "prompts": "num_prompts",
               "heldout": "num_heldout", "hidden": "hidden_size", "layers": "num_layers",
               "warmup_steps": "warmup_steps", "reward": "reward"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``oracle`` to the ``auxdpo`` parser."""
    p = subparsers.add_parser(
        "oracle", help="exact RLHF optimum vs DPO/IPO/DPOP/AuxDPO on enumerable tasks",
        description="Population-regime oracle benchmark on a tiny GPT-2 whose responses (every "
                    "token string of length L) are enumerated: exact RLHF optimum over the "
                    "same trainable parameters, local RLHF (Eq. 5), and each method's "
                    "population minimiser; prints a table (or --json) and writes results.json"
                    ", results.md and plots to --out.")
    p.add_argument("--preset", choices=sorted(PRESETS), help="quick: 3 seeds, norm, β=100, "
                   "anti-aligned (< 5 min on 2 cores); full: the documented grid")
    p.add_argument("--family", choices=["tokens"], help="task family (default tokens)")
    p.add_argument("--regime", choices=["population"], help="data regime (default population)")
    p.add_argument("--design", choices=["anti-aligned", "on-policy", "uniform", "skew"])
    p.add_argument("--capacity", nargs="+", dest="capacities", metavar="SPEC",
                   help="norm, lora:<r>, last-block, full, regex:<p> (several = a sweep)")
    p.add_argument("--beta", nargs="+", type=float, dest="betas", metavar="B")
    p.add_argument("--seeds", type=int, help="number of seeds (10; quick: 3)")
    p.add_argument("--first-seed", type=int, help="first seed (0)")
    p.add_argument("--methods", nargs="+", choices=["dpo", "ipo", "dpop", "auxdpo"])
    p.add_argument("--aux-modes", nargs="+", choices=["projection", "global"])
    p.add_argument("--lambdas", nargs="+", type=float, metavar="L",
                   help="λ of AuxDPO's global penalty λ‖A_ρδ‖² (a sweep when several)")
    p.add_argument("--anti-factor", type=float, help="K of the anti-aligned design (1000)")
    p.add_argument("--skew", type=float, help="σ of the skew design (1.0)")
    p.add_argument("--dpop-lambda", type=float, help="DPOP's λ (50)")
    p.add_argument("--max-iter", type=int, help="L-BFGS iterations per solve")
    p.add_argument("--precondition-floor", type=float,
                   help="relative eigenvalue floor of the preconditioners (1e-9; LoRA: 1e-3)")
    for flag, help_text in (("vocab-size", "V (6)"), ("response-length", "L (3)"),
                            ("prompt-length", "P (3)"), ("prompts", "training prompts (16)"),
                            ("heldout", "held-out prompts (4)"), ("hidden", "GPT-2 width (32)"),
                            ("layers", "GPT-2 blocks (2)"),
                            ("warmup-steps", "supervised warm-up steps (30)")):
        p.add_argument(f"--{flag}", type=int, help=help_text)
    p.add_argument("--reward", choices=["structured", "random"], help="r* family")
    p.add_argument("--out", help="run directory (default runs/oracle-<time>)")
    p.add_argument("--json", action="store_true",
                   help='print {"gap_closed": {method: {"mean", "std"}}, "reward", "kl", '
                        '"reversal", "heldout_acc", "headline", "cells", "seconds", "run_dir"}')
    p.add_argument("--quiet", action="store_true", help="no per-solve progress on stderr")
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace):
    """OracleConfig from a preset and the explicit flags (flags win)."""
    from auxdpo.oracle.runner import OracleConfig
    from auxdpo.oracle.tasks import TokenTaskConfig

    values = dict(PRESETS.get(args.preset or "", {}))
    for key in ("family", "regime", "design", "capacities", "betas", "seeds", "methods",
                "aux_modes", "lambdas", "anti_factor", "first_seed", "skew", "dpop_lambda", "max_iter",
                "precondition_floor"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    task = {field: getattr(args, flag) for flag, field in _TASK_FLAGS.items()
            if getattr(args, flag, None) is not None}
    return OracleConfig(task=TokenTaskConfig(**task), **values)


def _run(args: argparse.Namespace) -> int:
    import sys

    from auxdpo.oracle.outputs import headline, markdown_table, write_outputs
    from auxdpo.oracle.runner import run_oracle

    config = build_config(args)
    run_dir = args.out or f"runs/oracle-{time.strftime('%Y%m%d-%H%M%S')}"
    log = (lambda message: None) if args.quiet else (
        lambda message: print(message, file=sys.stderr, flush=True))
    result = run_oracle(config, log=log,
                        on_partial=lambda partial: write_outputs(partial, run_dir, plots=False))
    paths = write_outputs(result, run_dir)
    if args.json:
        print(json.dumps({**headline(result), "run_dir": run_dir}))
    else:
        print(markdown_table(result["summary"]), end="")
        print(f"wrote {', '.join(paths)} ({result['seconds']:.0f} s)")
    return 0
