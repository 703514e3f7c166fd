"""The oracle grid's report: ``grid.md``, ``grid.json`` and ``gap_vs_capacity.png``.

Per cell, its status and, over its complete seeds, the gap closed (mean ± std) per capacity,
β and method, with a detail row per method (gain in J, worst and best seed, the true reward,
KL, reversal rate, held-out accuracy); one capacity figure per task whose cells differ only in
capacity.
"""

from __future__ import annotations

import json
import math
import os
import sys

from auxdpo.harness.evaluation.report import atomic_write_text
from auxdpo.harness.oracle.grid import cells as grid_cells

__all__ = ["plot_capacity", "write_report"]


def _fmt(stat: dict | None) -> str:
    if stat is None or math.isnan(stat["mean"]):
        return "–"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _complete_rows(state: grid_cells.CellState, config) -> list[dict]:
    """The cell's rows of its complete seeds ([] when it has none or a different config)."""
    if state.result is None or state.state == "different":
        return []
    complete = grid_cells.complete_seeds(state.result["rows"], config)
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

    from auxdpo.harness.evaluation.report import method_style, save_figure

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
    from auxdpo.harness.oracle.runner import aggregate

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
    for name, fields in grid_cells.GRID:
        config = grid_cells.cell_config(fields, seeds, cache)
        state = grid_cells.inspect_cell(out_dir, name, config)
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
