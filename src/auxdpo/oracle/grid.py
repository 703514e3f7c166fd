"""``auxdpo oracle-grid``: the oracle benchmark's full grid, resumable cell by cell.

A cell is one ``auxdpo oracle`` run (an :class:`~auxdpo.oracle.runner.OracleConfig`) whose
outputs live in ``<out>/<cell name>/``. Before running a cell its ``results.json`` is read: a
cell whose config matches and whose seeds are all complete is skipped, a cell whose first k
seeds are complete runs only the missing seeds, and a file from a different config is refused
(unless ``force``). After every cell ``grid.md`` / ``grid.json`` summarise every cell.
See docs/oracle.md, "The full grid".

No heavy imports at module top (``auxdpo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass

from auxdpo.oracle.cli import _FINITE_FLAGS, _MMLU_FIELDS, _TASK_FLAGS
from auxdpo.evaluation.report import atomic_write_text

__all__ = ["GRID", "CellState", "cell_command", "cell_config", "config_differences",
           "inspect_cell", "plot_capacity", "register", "run_grid", "select_cells",
           "write_report"]

_BETAS = [100.0, 10.0, 1.0]
_METHODS = ["dpo", "ipo", "dpop", "auxdpo"]
_DESIGNS = ("anti-aligned", "on-policy", "uniform", "skew")


def _cell(**fields) -> dict:
    return {"seeds": 10, "methods": list(_METHODS), "betas": list(_BETAS), **fields}


# Ordered cheap → expensive. Names are directory names under --out.
GRID: list[tuple[str, dict]] = [
    *[(f"tokens-population-{d}-norm",
       _cell(family="tokens", regime="population", design=d, capacities=["norm"],
             max_iter=150, aux_modes=["projection"])) for d in _DESIGNS],
    *[(f"mmlu-choice-population-{d}-head",
       _cell(family="mmlu-choice", regime="population", design=d, capacities=["head"],
             max_iter=1000, mmlu={"reward": "binary"})) for d in _DESIGNS],
    ("mmlu-choice-population-anti-aligned-head-graded",
     _cell(family="mmlu-choice", regime="population", design="anti-aligned",
           capacities=["head"], max_iter=1000, mmlu={"reward": "graded"})),
    *[(f"tokens-population-{d}-lora{r}",
       _cell(family="tokens", regime="population", design=d, capacities=[f"lora:{r}"],
             max_iter=100, restarts=4, precondition_floor=1e-3, restart_floor=1e-6))
      for r in (1, 4) for d in ("anti-aligned", "on-policy")],
    *[(f"tokens-finite-{d}-norm",
       _cell(family="tokens", regime="finite", design=d, capacities=["norm"],
             aux_modes=["projection", "global", "batch"], finite={"pairs": 1000}))
      for d in ("anti-aligned", "on-policy")],
]

# Fields that do not change a cell's rows (or only say which seeds ran): never compared.
_IGNORED = {"threads", "first_seed", "seeds"}


def cell_config(fields: dict, seeds: int | None = None, encode_cache: str | None = None):
    """The OracleConfig of a grid cell, with ``seeds`` and ``mmlu.cache`` overridden."""
    from auxdpo.oracle.runner import OracleConfig

    fields = {**fields, **({"seeds": seeds} if seeds is not None else {})}
    if encode_cache is not None and fields.get("family") == "mmlu-choice":
        fields["mmlu"] = {**fields.get("mmlu", {}), "cache": encode_cache}
    return OracleConfig(**json.loads(json.dumps(fields)))        # nested dicts copied


def _relevant(config: dict) -> dict:
    """The fields that decide a cell's rows; sections its family/regime never reads dropped."""
    out = {k: v for k, v in config.items() if k not in _IGNORED}
    if config["family"] != "tokens":
        out.pop("task")
    if config["family"] != "mmlu-choice":
        out.pop("mmlu")
    else:
        out["mmlu"] = {k: v for k, v in config["mmlu"].items() if k != "cache"}
        out["mmlu"]["data"] = os.path.realpath(out["mmlu"]["data"])
    if config["regime"] != "finite":
        out.pop("finite")
    return out


def config_differences(stored: dict, config) -> list[str]:
    """Names of the fields (``mmlu.reward`` style) where a saved config differs from ``config``.

    ``stored`` is first rebuilt as an OracleConfig, so fields added since it was written take
    their defaults; ``threads``, ``first_seed``, ``seeds``, ``mmlu.cache`` and the sections a
    cell's family and regime never read are not compared.
    """
    from dataclasses import asdict

    from auxdpo.oracle.runner import OracleConfig

    try:
        rebuilt = asdict(OracleConfig(**stored))
    except (TypeError, ValueError) as exc:
        return [f"<not a valid OracleConfig: {exc}>"]
    ours, theirs = _relevant(asdict(config)), _relevant(rebuilt)
    diff = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diff.append(key)
    return diff


def expected_methods(config) -> list[str]:
    """Row names every (seed, capacity, β) of a complete run holds."""
    from auxdpo.oracle.runner import method_names

    names = ["base", "rlhf", "rlhf_local"] + [n for n, _, _ in method_names(config)]
    if config.regime == "finite" and config.finite.rm_steps > 0:
        names.append("rlhf_2stage")
    return names


def complete_seeds(rows: list[dict], config) -> set[int]:
    """Seeds with a row for every capacity × β × expected method."""
    need = {(c, float(b), m) for c in config.capacities for b in config.betas
            for m in expected_methods(config)}
    have: dict[int, set] = {}
    for row in rows:
        have.setdefault(row["seed"], set()).add((row["capacity"], float(row["beta"]),
                                                 row["method"]))
    return {seed for seed, keys in have.items() if need <= keys}


@dataclass
class CellState:
    """What ``<out>/<name>/results.json`` holds for one grid cell."""

    name: str
    path: str                   # the cell's results.json
    state: str                  # "not run", "partial", "done" or "different"
    done: int                   # k: seeds 0..k-1 are complete
    seeds: int                  # N wanted
    reason: str = ""            # why "different"
    result: dict | None = None  # the file's contents (None when absent)

    def label(self) -> str:
        if self.state == "partial":
            return f"partial {self.done} of {self.seeds} seeds"
        if self.state == "done":
            return f"done ({self.done} seeds)" if self.done != self.seeds else "done"
        return "different config" if self.state == "different" else self.state


def inspect_cell(out_dir: str, name: str, config) -> CellState:
    """Status of one cell in ``out_dir`` against ``config`` (which carries N = config.seeds)."""
    path = os.path.join(out_dir, name, "results.json")
    state = CellState(name, path, "not run", 0, config.seeds)
    if not os.path.exists(path):
        return state
    try:
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        stored, rows = result["config"], result["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        state.state, state.reason = "different", f"{path}: not an oracle results file ({exc})"
        return state
    diff = config_differences(stored, config)
    if diff:
        state.state = "different"
        state.reason = f"{path}: config differs from grid cell {name} in {', '.join(diff)}"
        return state
    complete = complete_seeds(rows, config)
    k = 0
    while k in complete:
        k += 1
    state.result, state.done = result, k
    if k >= config.seeds:
        state.state = "done"
    elif k > 0:
        state.state = "partial"
    elif complete:     # complete seeds, but not from 0: overwriting them would lose work
        state.state = "different"
        state.reason = (f"{path}: holds complete seeds {sorted(complete)} but not seed 0 "
                        f"(a --first-seed run)")
    return state


def select_cells(only: list[str] | None = None) -> list[tuple[str, dict]]:
    """GRID's cells whose names match any of ``only`` (names or globs), in GRID order."""
    if not only:
        return list(GRID)
    names = [name for name, _ in GRID]
    unknown = [p for p in only if not fnmatch.filter(names, p)]
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)} matches no grid cell; cells: "
                         f"{', '.join(names)}")
    return [(n, f) for n, f in GRID if any(fnmatch.fnmatchcase(n, p) for p in only)]


def _result(config, rows: list[dict], seconds: float) -> dict:
    """An oracle result dictionary (runner.run_oracle's shape) over ``rows``."""
    from dataclasses import asdict

    from auxdpo.oracle.runner import aggregate

    summary = aggregate(rows)
    head = (config.capacities[0], config.betas[0])
    headline = {e["method"]: e["gap_closed"] for e in summary
                if (e["capacity"], e["beta"]) == head and e["method"] not in ("base", "rlhf")}
    return {"config": asdict(config), "rows": rows, "summary": summary,
            "gap_closed": headline, "seconds": seconds}


def _run_cell(state: CellState, config, out_dir: str, progress) -> int:
    """Run the seeds ``state`` lacks and write the merged outputs; returns seeds run."""
    from dataclasses import replace

    from auxdpo.oracle import runner
    from auxdpo.oracle.outputs import write_outputs

    k = state.done if state.state == "partial" else 0
    kept = [r for r in state.result["rows"] if r["seed"] < k] if k else []
    before = float(state.result.get("seconds", 0.0)) if k else 0.0
    merged = replace(config, first_seed=0)                  # config.seeds = N: covers all rows
    run_dir = os.path.dirname(state.path)

    def merge(partial: dict) -> dict:
        return _result(merged, kept + partial["rows"], before + partial["seconds"])

    result = runner.run_oracle(
        replace(config, first_seed=k, seeds=config.seeds - k), log=progress,
        on_partial=lambda partial: write_outputs(merge(partial), run_dir, plots=False))
    write_outputs(merge(result), run_dir)
    return config.seeds - k


def run_grid(out_dir: str, only: list[str] | None = None, seeds: int | None = None,
             encode_cache: str | None = None, log=lambda message: None, force: bool = False,
             progress=lambda message: None) -> list[dict]:
    """Run (or resume, or skip) every selected cell; returns ``[{"name", "action", "seeds"}]``.

    ``seeds`` overrides every cell's N; ``encode_cache`` is mmlu cells' ``mmlu.cache`` (default
    ``out_dir/mmlu-cache.pt``). A cell whose results.json has a different config is refused
    (ValueError naming every such file, before anything runs) unless ``force``. ``log`` gets
    one line per cell, ``progress`` the solvers' per-solve lines. grid.md / grid.json are
    rewritten after every cell.
    """
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    cache = encode_cache or os.path.join(out_dir, "mmlu-cache.pt")
    plan = []
    for name, fields in select_cells(only):
        config = cell_config(fields, seeds, cache)
        plan.append((inspect_cell(out_dir, name, config), config))
    refused = [s.reason for s, _ in plan if s.state == "different"]
    if refused and not force:
        raise ValueError("refusing to overwrite (use --force): " + "; ".join(refused))
    outcomes = []
    for state, config in plan:
        if state.state != "done":
            # Cells can take hours: look again, in case another process moved this one on.
            state = inspect_cell(out_dir, state.name, config)
            if state.state == "different" and not force:
                log(f"{state.name}: {state.reason}; skipped (use --force)")
                outcomes.append({"name": state.name, "action": "refused", "seeds": 0})
                write_report(out_dir, seeds, encode_cache)
                continue
        if state.state == "done":
            action, ran = "skipped", 0
            log(f"{state.name}: done ({state.done} seeds), skipped")
        else:
            action = "resumed" if state.state == "partial" else "ran"
            log(f"{state.name}: {state.label()}, running seeds "
                f"{state.done if action == 'resumed' else 0}..{config.seeds - 1}")
            ran = _run_cell(state, config, out_dir, progress)
            log(f"{state.name}: done")
        outcomes.append({"name": state.name, "action": action, "seeds": ran})
        write_report(out_dir, seeds, encode_cache)
    if not plan:
        write_report(out_dir, seeds, encode_cache)
    return outcomes


def _fmt(stat: dict | None) -> str:
    if stat is None or math.isnan(stat["mean"]):
        return "–"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _complete_rows(state: CellState, config) -> list[dict]:
    """The cell's rows of its complete seeds ([] when it has none or a different config)."""
    if state.result is None or state.state == "different":
        return []
    complete = complete_seeds(state.result["rows"], config)
    return [r for r in state.result["rows"] if r["seed"] in complete]


def _cell_tables(summary: list[dict]) -> list[dict]:
    """Per (capacity, β): gap closed mean ± std over the complete seeds, per method."""
    out: dict[tuple, dict] = {}
    for e in summary:
        if e["method"] in ("base", "rlhf"):
            continue
        entry = out.setdefault((e["capacity"], e["beta"]), {
            "capacity": e["capacity"], "beta": e["beta"], "seeds": e["seeds"],
            "dim": e["dim"], "methods": {}})
        entry["methods"][e["method"]] = e["gap_closed"]
    return list(out.values())


def _cell_details(rows: list[dict], summary: list[dict]) -> list[dict]:
    """Per (capacity, β, method), ``summary``'s metrics (``runner.aggregate`` of ``rows``) plus
    the gain over θ₀ in J and the gap closed's worst and best seed."""
    base = {(r["seed"], r["capacity"], r["beta"]): r["J"] for r in rows if r["method"] == "base"}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["capacity"], row["beta"], row["method"]), []).append(row)
    out = []
    for e in summary:
        members = groups[e["capacity"], e["beta"], e["method"]]
        gains = [r["J"] - base[r["seed"], r["capacity"], r["beta"]] for r in members
                 if (r["seed"], r["capacity"], r["beta"]) in base and r.get("J") is not None]
        gaps = [r["gap_closed"] for r in members]
        out.append({
            "capacity": e["capacity"], "beta": e["beta"], "method": e["method"],
            "seeds": e["seeds"], "gain": _mean_std(gains) if len(gains) == len(members) else None,
            "gap_min": min(gaps), "gap_max": max(gaps),
            # J above the RLHF solve's: that solve stopped short of the optimum here.
            "above_rlhf": sum(g > 1 + 1e-9 for g in gaps),
            **{m: e[m] for m in ("gap_closed", "reward", "kl", "reversal", "heldout_acc")}})
    return out


def _mean_std(values: list[float]) -> dict:
    """Mean and population std (ddof 0, as ``runner.aggregate``), for the J gains."""
    mean = math.fsum(values) / len(values)
    return {"mean": mean, "std": math.sqrt(math.fsum((v - mean) ** 2 for v in values)
                                           / len(values))}


def _detail_lines(details: list[dict]) -> list[str]:
    lines = ["", "| capacity | β | method | seeds | J − J(θ₀) | gap closed | worst | best | "
             "> rlhf | reward | KL | reversal | held-out acc |", "|" + "---|" * 13]
    for e in details:
        gain = "–" if e["gain"] is None else f"{e['gain']['mean']:.3g} ± {e['gain']['std']:.2g}"
        lines.append(
            f"| {e['capacity']} | {e['beta']:g} | {e['method']} | {e['seeds']} | {gain} | "
            f"{_fmt(e['gap_closed'])} | {e['gap_min']:.3f} | {e['gap_max']:.3f} | "
            f"{e['above_rlhf']} | {e['reward']['mean']:.4g} | {e['kl']['mean']:.3g} | "
            f"{e['reversal']['mean']:.3f} | {e['heldout_acc']['mean']:.3f} |")
    return lines


# What makes two cells one task, so that their capacities belong on one axis.
_TASK_KEYS = ("family", "regime", "design", "task", "mmlu", "finite")
# Not plotted: rlhf_local is off any common scale under LoRA (docs/results.md), dpop stays at 0.
_UNPLOTTED = ("rlhf_local", "dpop")


def plot_capacity(groups: dict[str, list[dict]], path: str) -> dict | None:
    """One row per task (cells that differ only in capacity, ≥ 2 capacities with results), one
    column per β: gap closed (mean ± std over each cell's complete seeds) against capacity.
    Returns what was drawn, ``{(task, β, method): [(capacity, mean, std), ...]}``, or None,
    writing nothing, when no task has two capacities."""
    rows = {k: v for k, v in groups.items()
            if len(dict.fromkeys(e["capacity"] for e in v)) > 1}
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auxdpo.evaluation.report import method_style, save_figure

    betas = list(dict.fromkeys(e["beta"] for v in rows.values() for e in v))
    drawn: dict[tuple, list] = {}
    fig, axes = plt.subplots(len(rows), len(betas), figsize=(4 * len(betas), 3.2 * len(rows)),
                             squeeze=False, sharey="row")
    for i, (task, entries) in enumerate(rows.items()):
        caps = list(dict.fromkeys(e["capacity"] for e in entries))
        for j, beta in enumerate(betas):
            ax, here = axes[i][j], [e for e in entries if e["beta"] == beta]
            methods = [m for m in dict.fromkeys(m for e in here for m in e["methods"])
                       if m not in _UNPLOTTED]
            for index, method in enumerate(methods):
                marker, shift = method_style(index, len(methods))
                pts = [(caps.index(e["capacity"]), e["methods"][method]) for e in here
                       if method in e["methods"]]
                ax.errorbar([x + shift for x, _ in pts], [p["mean"] for _, p in pts],
                            [p["std"] for _, p in pts], marker=marker, capsize=3,
                            label=method)
                drawn[task, beta, method] = [(caps[x], p["mean"], p["std"]) for x, p in pts]
            ticks = {e["capacity"]: f"{e['capacity']}\nd={e['dim']}, {e['seeds']} seed"
                     + "s" * (e["seeds"] != 1) for e in here}
            ax.set_xticks(range(len(caps)), [ticks.get(c, c) for c in caps], fontsize="small")
            ax.axhline(1.0, color="gray", lw=0.8, ls="--")
            ax.axhline(0.0, color="gray", lw=0.8)
            ax.set_title(f"{task}, β = {beta:g}", fontsize="small")
            if j == 0:
                ax.set_ylabel("fraction of RLHF gain closed")
                ax.legend(fontsize="x-small")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return drawn


def write_report(out_dir: str, seeds: int | None = None,
                 encode_cache: str | None = None) -> list[str]:
    """(Re)write ``grid.md`` and ``grid.json`` from what ``out_dir`` holds, for every cell."""
    from auxdpo.oracle.runner import aggregate

    cache = encode_cache or os.path.join(out_dir, "mmlu-cache.pt")
    cells, lines = [], ["# Oracle grid", "", "Gap closed (1 = exact RLHF optimum, 0 = θ₀), "
                        "mean ± std over the complete seeds. Written by `auxdpo oracle-grid`.",
                        "", "Under each cell's table, one row per method: J − J(θ₀) (the "
                        "method's gain in the exact objective; the rlhf row's is the "
                        "denominator of the gap closed), the gap closed's worst and best "
                        "seed, `> rlhf` (seeds where the method's J exceeds the RLHF solve's, "
                        "which then stopped short of the optimum), and the means of the true "
                        "reward, KL to π₀, reversal rate and held-out pair accuracy.",
                        "", "| cell | status |", "|---|---|"]
    tables, groups = [], {}
    for name, fields in GRID:
        config = cell_config(fields, seeds, cache)
        state = inspect_cell(out_dir, name, config)
        rows = _complete_rows(state, config)
        summary = aggregate(rows)
        entries, details = _cell_tables(summary), _cell_details(rows, summary)
        task = " ".join(str(fields[k]) for k in ("family", "regime", "design") if k in fields)
        extra = {k: fields[k] for k in _TASK_KEYS[3:] if k in fields}
        groups.setdefault(task + (f" {json.dumps(extra, sort_keys=True)}" if extra else ""),
                          []).extend(entries)
        cells.append({"name": name, "status": state.label(), "state": state.state,
                      "seeds_done": state.done, "seeds": state.seeds,
                      "results": os.path.relpath(state.path, out_dir),
                      "reason": state.reason, "gap_closed": entries, "details": details})
        lines.append(f"| {name} | {state.label()} |")
        if entries:
            methods = list(dict.fromkeys(m for e in entries for m in e["methods"]))
            tables += ["", f"## {name}", "",
                       "| capacity | β | seeds | " + " | ".join(methods) + " |",
                       "|" + "---|" * (3 + len(methods))]
            tables += [f"| {e['capacity']} | {e['beta']:g} | {e['seeds']} | "
                       + " | ".join(_fmt(e["methods"].get(m)) for m in methods) + " |"
                       for e in entries]
            tables += _detail_lines(details)
    paths = [os.path.join(out_dir, "grid.md"), os.path.join(out_dir, "grid.json")]
    atomic_write_text(paths[0], "\n".join(lines + tables) + "\n")
    atomic_write_text(paths[1], json.dumps({"cells": cells}, indent=1))
    if plot_capacity(groups, os.path.join(out_dir, "gap_vs_capacity.png")) is not None:
        paths.append(os.path.join(out_dir, "gap_vs_capacity.png"))
    else:
        print("gap_vs_capacity.png: skipped (no task has finished cells at two or more "
              "capacities yet)", file=sys.stderr)
    return paths


# ---- command line ----------------------------------------------------------------------

_TOP_FLAGS = {"family": "family", "regime": "regime", "design": "design",
              "capacities": "capacity", "betas": "beta", "seeds": "seeds",
              "first_seed": "first-seed", "methods": "methods", "aux_modes": "aux-modes",
              "lambdas": "lambdas", "anti_factor": "anti-factor", "skew": "skew",
              "dpop_lambda": "dpop-lambda", "max_iter": "max-iter",
              "precondition_floor": "precondition-floor", "restarts": "restarts",
              "restart_floor": "restart-floor", "relinearise": "relinearise"}
_SECTION_FLAGS = {
    "task": {field: flag.replace("_", "-") for flag, field in _TASK_FLAGS.items()},
    "mmlu": {field: dest.replace("_", "-") for dest, field in _MMLU_FIELDS},
    "finite": {**{flag.replace("-", "_"): flag for flag, _, _ in _FINITE_FLAGS},
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
