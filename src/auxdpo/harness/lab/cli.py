"""``auxdpo lab``: the exact lab's experiments from the command line.

No torch or matplotlib at module top: they are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math

__all__ = ["register"]


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"--{name} is empty")
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"--{name} must be finite (no NaN or inf), got {text!r}")
    return values


def _positive(text: str, name: str) -> list[float]:
    values = _floats(text, name)
    if any(v <= 0 for v in values):
        raise ValueError(f"--{name} must be > 0, got {text!r}")
    return values


def _counts(text: str) -> tuple[float, float, float]:
    values = _floats(text, "counts")
    if len(values) != 3:
        raise ValueError(f"--counts needs three numbers n12,n23,n31, got {text!r}")
    if any(v < 0 for v in values):
        raise ValueError(f"--counts must be non-negative, got {text!r}")
    if sum(values) == 0:
        raise ValueError("--counts must not all be zero")
    return tuple(values)


def _lambda(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"--dpop-lambda must be a finite number >= 0, got {value!r}")
    return value


def _prop2(args) -> int:
    from auxdpo.harness.lab.experiments import format_prop2, prop2, single_thread

    betas = _positive(args.beta, "beta")
    if len(betas) != 1:
        raise ValueError(f"--beta takes one value for prop2, got {args.beta!r}")
    beta = betas[0]
    counts, lam = _counts(args.counts), _lambda(args.dpop_lambda)
    with single_thread():
        result = prop2(beta, counts, lam)
    if args.json:
        print(json.dumps({k: result[k] for k in ("theta", "reward", "failures")}))
    else:
        print(format_prop2(result, beta, counts, lam))
    return 0


def _sensitivity(args) -> int:
    from auxdpo.harness.lab.experiments import sensitivity, single_thread

    if args.resolution < 3:
        raise ValueError(f"--resolution must be >= 3, got {args.resolution}")
    lam = _lambda(args.dpop_lambda)
    with single_thread():
        for beta in _positive(args.beta, "beta"):
            paths, summary = sensitivity(beta, args.out, args.resolution, lam)
            for m, s in summary.items():
                share = 100 * s["share_below_base"]
                print(f"beta={beta:g} {m:<7} reward below base on {share:5.1f}% of the grid; "
                      f"change in [{s['min']:+.5f}, {s['max']:+.5f}]")
            for p in paths:
                print(f"wrote {p}")
    return 0


def _loglinear(args) -> int:
    from auxdpo.harness.lab.experiments import format_gap_table, loglinear_gap, single_thread

    betas, skews = _positive(args.beta, "beta"), _floats(args.skew, "skew")
    if any(k < 0 for k in skews):
        raise ValueError(f"--skew must be >= 0, got {args.skew!r}")
    for name in ("seeds", "states", "dim"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.actions < 2:
        raise ValueError(f"--actions must be >= 2, got {args.actions}")
    results = []
    with single_thread():
        for beta in betas:
            for skew in skews:
                gap = loglinear_gap(beta, skew, args.seeds, states=args.states,
                                    actions=args.actions, dim=args.dim,
                                    dpop_lambda=_lambda(args.dpop_lambda))
                results.append({"beta": beta, "skew": skew, "gap_closed": gap})
    if args.json and len(results) == 1:
        print(json.dumps({"gap_closed": results[0]["gap_closed"]}))
    elif args.json:
        print(json.dumps({"results": results}))
    else:
        print(format_gap_table(results))
    return 0


def _beta_sweep(args) -> int:
    from auxdpo.harness.lab.experiments import beta_sweep, format_beta_sweep, single_thread

    betas = _positive(args.betas, "betas")
    with single_thread():
        rows, paths = beta_sweep(args.out, betas, seed=args.seed, skew=args.skew,
                                 dpop_lambda=_lambda(args.dpop_lambda))
    print(format_beta_sweep(rows))
    for p in paths:
        print(f"wrote {p}")
    return 0


def register(subparsers) -> None:
    """Add ``lab`` and its subcommands to the main parser."""
    lab = subparsers.add_parser("lab", help="exact lab: small policy classes solved exactly",
                                description="Exact population-level experiments of the paper.")
    sub = lab.add_subparsers(dest="lab_command", metavar="EXPERIMENT", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("prop2", formatter_class=fmt, help="the Proposition 2 instance",
                       description="r* = [1,2,0], pi ~ [e^t, e^-t, 1], theta0 = 0: theta, expected "
                                   "reward and failure modes of every method.")
    p.add_argument("--beta", default="10", help="KL strength beta > 0")
    p.add_argument("--counts", default="1,1,100", help="pair counts n12,n23,n31 (>= 0)")
    p.add_argument("--dpop-lambda", type=float, default=50.0, help="DPOP's lambda")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_prop2)

    p = sub.add_parser("sensitivity", formatter_class=fmt, help="Figure 2 as a map (CSV + PNG)",
                       description="Sweep (n12,n23,n31) over the simplex; write the change in "
                                   "expected reward of DPO, IPO, DPOP, AuxDPO as CSV and PNG.")
    p.add_argument("--beta", default="10", help="beta, or several comma-separated")
    p.add_argument("--out", default="lab_out", help="output directory")
    p.add_argument("--resolution", type=int, default=60,
                   help="lattice size N: (N-1)(N-2)/2 interior grid points")
    p.add_argument("--dpop-lambda", type=float, default=50.0, help="DPOP's lambda")
    p.set_defaults(func=_sensitivity)

    p = sub.add_parser("loglinear", formatter_class=fmt, help="random log-linear instances",
                       description="Fraction of the RLHF gain each method closes on random "
                                   "log-linear instances with skewed pair counts.")
    p.add_argument("--beta", default="10", help="beta, or several comma-separated")
    p.add_argument("--skew", default="1", help="count skew K >= 0, or several comma-separated")
    p.add_argument("--seeds", type=int, default=10, help="instances per (beta, skew)")
    p.add_argument("--states", type=int, default=10, help="|S|")
    p.add_argument("--actions", type=int, default=20, help="|A|")
    p.add_argument("--dim", type=int, default=4, help="parameter dimension d")
    p.add_argument("--dpop-lambda", type=float, default=50.0, help="DPOP's lambda")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_loglinear)

    p = sub.add_parser("beta-sweep", formatter_class=fmt, help="AuxDPO vs RLHF as beta grows",
                       description="How the gap between AuxDPO and exact RLHF shrinks with beta "
                                   "(the paper's approximation-error proposition).")
    p.add_argument("--out", default="lab_out", help="output directory (CSV + PNG)")
    p.add_argument("--betas", default="0.5,1,2,5,10,20,50,100,200", help="betas to sweep")
    p.add_argument("--seed", type=int, default=0, help="log-linear instance seed")
    p.add_argument("--skew", type=float, default=1.0, help="count skew of the instance")
    p.add_argument("--dpop-lambda", type=float, default=50.0, help="DPOP's lambda")
    p.set_defaults(func=_beta_sweep)
