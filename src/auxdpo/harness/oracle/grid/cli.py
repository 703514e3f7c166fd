"""``auxdpo oracle-grid``: the oracle benchmark's full grid, resumable cell by cell.

``--list`` prints every cell with its equivalent ``auxdpo oracle`` command
(:func:`cell_command`) and its status, ``--report`` only rewrites the report, and otherwise
:func:`~auxdpo.harness.oracle.grid.run.run_grid` runs what is missing. See docs/oracle.md, "The full
grid".

No heavy imports at module top (``auxdpo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys

from auxdpo.harness.oracle.cli import FINITE_FLAGS, MMLU_FIELDS, TASK_FLAGS
from auxdpo.harness.oracle.grid.cells import cell_config, inspect_cell, select_cells
from auxdpo.harness.oracle.grid.report import write_report
from auxdpo.harness.oracle.grid.run import run_grid

__all__ = ["cell_command", "register"]


_TOP_FLAGS = {"family": "family", "regime": "regime", "design": "design",
              "capacities": "capacity", "betas": "beta", "seeds": "seeds",
              "first_seed": "first-seed", "methods": "methods", "aux_modes": "aux-modes",
              "lambdas": "lambdas", "anti_factor": "anti-factor", "skew": "skew",
              "dpop_lambda": "dpop-lambda", "max_iter": "max-iter",
              "precondition_floor": "precondition-floor", "restarts": "restarts",
              "restart_floor": "restart-floor", "relinearise": "relinearise"}
_SECTION_FLAGS = {
    "task": {field: flag.replace("_", "-") for flag, field in TASK_FLAGS.items()},
    "mmlu": {field: dest.replace("_", "-") for dest, field in MMLU_FIELDS},
    "finite": {**{flag.replace("-", "_"): flag for flag, _, _ in FINITE_FLAGS},
               "pairs": "pairs", "solver": "finite-solver", "aux_offsets": "aux-offsets",
               "null_weights": "aux-null-weights"},
}


def _arg(value) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return shlex.quote(str(value))


def cell_command(name: str, fields: dict, out_dir: str, seeds: int | None = None,
                 encode_cache: str | None = None) -> str:
    """The ``auxdpo oracle ...`` command line that runs the same config as a grid cell."""
    fields = {**fields, **({"seeds": seeds} if seeds is not None else {})}
    if fields.get("family") == "mmlu-choice":
        fields["mmlu"] = {**fields.get("mmlu", {}),
                          "cache": encode_cache or os.path.join(out_dir, "mmlu-cache.pt")}
    parts = ["auxdpo", "oracle"]
    order = list(_TOP_FLAGS) + list(_SECTION_FLAGS)
    for key, value in sorted(fields.items(), key=lambda kv: (
            order.index(kv[0]) if kv[0] in order else len(order))):
        if key in _SECTION_FLAGS:
            pairs = [(_SECTION_FLAGS[key].get(k), k, v) for k, v in value.items()]
        else:
            pairs = [(_TOP_FLAGS.get(key), key, value)]
        for flag, field_name, v in pairs:
            if flag is None:
                raise ValueError(f"grid cell {name}: field {key}.{field_name} has no "
                                 f"`auxdpo oracle` flag")
            values = v if isinstance(v, list) else [v]
            parts += [f"--{flag}", *(_arg(x) for x in values)]
    return " ".join(parts + ["--out", shlex.quote(os.path.join(out_dir, name))])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``oracle-grid`` to the ``auxdpo`` parser."""
    p = subparsers.add_parser(
        "oracle-grid", help="the oracle benchmark's full grid, resumable cell by cell",
        description="Run every cell of the oracle grid (designs × capacities × β ∈ {100, 10, 1}"
                    " × regimes) into --out DIR/<cell>/, skipping complete cells and resuming "
                    "partial ones seed by seed; writes DIR/grid.md and DIR/grid.json after "
                    "every cell. See docs/oracle.md, 'The full grid'.")
    p.add_argument("--out", required=True, help="grid directory (one folder per cell)")
    p.add_argument("--only", nargs="+", metavar="NAME_OR_GLOB",
                   help="run only these cells (names or shell globs, e.g. 'tokens-*-norm')")
    p.add_argument("--seeds", type=int, help="seeds per cell (default: each cell's, 10); a "
                   "later larger N resumes from there")
    p.add_argument("--encode-cache", help="mmlu-choice cells' encode cache "
                   "(default DIR/mmlu-cache.pt)")
    p.add_argument("--list", action="store_true",
                   help="print every cell, its equivalent `auxdpo oracle` command and its "
                        "status in DIR, then exit")
    p.add_argument("--report", action="store_true",
                   help="only rewrite DIR/grid.md and DIR/grid.json from what DIR holds")
    p.add_argument("--force", action="store_true",
                   help="rerun cells whose results.json holds a different config")
    p.add_argument("--quiet", action="store_true", help="no per-solve progress on stderr")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.list:
        cache = args.encode_cache or os.path.join(args.out, "mmlu-cache.pt")
        for name, fields in select_cells(args.only):
            state = inspect_cell(args.out, name, cell_config(fields, args.seeds, cache))
            print(f"{name}: {state.label()}" + (f" ({state.reason})" if state.reason else ""))
            print("    " + cell_command(name, fields, args.out, args.seeds, args.encode_cache))
        return 0
    from auxdpo.locks import output_folder

    if args.report:
        with output_folder(args.out, "auxdpo oracle-grid --report"):
            paths = write_report(args.out, args.seeds, args.encode_cache)
        print(f"wrote {', '.join(paths)}")
        return 0

    def err(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # Libraries the finite regime's trainer loads log to stdout; keep stdout for the summary.
    with output_folder(args.out, "auxdpo oracle-grid"), contextlib.redirect_stdout(sys.stderr):
        outcomes = run_grid(args.out, args.only, args.seeds, args.encode_cache, log=err,
                            force=args.force,
                            progress=(lambda message: None) if args.quiet else err)
    for o in outcomes:
        print(f"{o['name']}: {o['action']}" + (f" ({o['seeds']} seeds run)" if o["seeds"]
                                               else ""))
    print(f"wrote {os.path.join(args.out, 'grid.md')}, {os.path.join(args.out, 'grid.json')}")
    return 0
