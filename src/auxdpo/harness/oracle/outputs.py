"""An oracle run's files: results.json, results.md (the table) and plots, written atomically."""

from __future__ import annotations

import json
import math
import os

from auxdpo.harness.evaluation.report import atomic_write_text, method_style, save_figure

__all__ = ["headline", "markdown_table", "write_outputs"]

COLUMNS = (("gap_closed", "gap closed", "{:.3f}"), ("reward", "E[r*]", "{:.4f}"),
           ("kl", "KL(π‖π₀)", "{:.2e}"), ("reversal", "reversal", "{:.3f}"),
           ("heldout_acc", "held-out acc", "{:.3f}"))


def _cell(stat: dict, fmt: str) -> str:
    if math.isnan(stat["mean"]):
        return "–"
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def capped_note(summary: list[dict]) -> str | None:
    """One line when some solves stopped at their iteration cap, else None."""
    capped = sum(e.get("capped", 0) for e in summary)
    if not capped:
        return None
    return (f"⚠ {capped} solve(s) stopped at the iteration cap (rows marked ⚠, count in "
            "'at cap'): not converged; raise --max-iter or --restarts")


def markdown_table(summary: list[dict]) -> str:
    """One row per (capacity, β, method) — and n in an n-sweep: every metric as mean ± std
    over seeds, and how many of the seeds' solves stopped at the iteration cap (flagged ⚠)."""
    sweep = any("pairs" in e for e in summary)
    head = "| capacity | d | S·A | β | " + ("n | " if sweep else "") + "method | seeds | " + \
        "at cap | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (7 + sweep + len(COLUMNS))]
    for e in summary:
        cells = [_cell(e[key], fmt) for key, _, fmt in COLUMNS]
        n = f"{e['pairs']} | " if sweep else ""
        capped = e.get("capped", 0)
        method = f"{e['method']} ⚠" if capped else e["method"]
        lines.append(f"| {e['capacity']} | {e['dim']} | {e['responses']} | {e['beta']:g} | "
                     f"{n}{method} | {e['seeds']} | {capped} | " + " | ".join(cells) + " |")
    note = capped_note(summary)
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def headline(result: dict) -> dict | list[dict]:
    """The ``--json`` answer: headline cell's metrics per method, plus every cell. An n-sweep
    gives a list of such answers, one per n (each with its ``pairs``)."""
    config = result["config"]
    head = (config["capacities"][0], config["betas"][0])
    cell = [e for e in result["summary"] if (e["capacity"], e["beta"]) == head]
    sweep = list(dict.fromkeys(e["pairs"] for e in cell if "pairs" in e))
    if sweep:
        return [_headline(result, [e for e in cell if e["pairs"] == n], head, pairs=n)
                for n in sweep]
    return _headline(result, cell, head)


def _headline(result: dict, cell: list[dict], head: tuple, pairs: int | None = None) -> dict:
    config = result["config"]
    out = {metric: {e["method"]: e[metric] for e in cell if e["method"] not in ("base",)}
           for metric in ("gap_closed", "reward", "kl", "reversal", "heldout_acc")}
    out["gap_closed"].pop("rlhf", None)
    extra = {} if pairs is None else {"pairs": pairs}
    return {**extra, **out,
            "headline": {"capacity": head[0], "beta": head[1], "design": config["design"],
                         "seeds": config["seeds"], **extra},
            "cells": result["summary"] if pairs is None else cell,
            "seconds": result["seconds"]}


def plot_pairs_sweep(summary: list[dict], config: dict, path: str) -> None:
    """Gap closed against n, one panel per (capacity, β): methods as lines with markers (a
    small horizontal offset each, so overlapping lines stay visible), the local RLHF level
    dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((e["capacity"], e["beta"]) for e in summary if "pairs" in e))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    skip = ("base", "rlhf", "rlhf_local")
    markers = "osD^vP*Xh<>"
    for ax, (capacity, beta) in zip(axes[0], panels):
        cell = [e for e in summary if (e["capacity"], e["beta"]) == (capacity, beta)]
        methods = [m for m in dict.fromkeys(e["method"] for e in cell) if m not in skip]
        for i, method in enumerate(methods):
            pts = sorted((e["pairs"], e["gap_closed"]) for e in cell if e["method"] == method)
            shift = 1.0 + 0.03 * (i - (len(methods) - 1) / 2)
            ax.errorbar([n * shift for n, _ in pts], [g["mean"] for _, g in pts],
                        [g["std"] for _, g in pts], marker=markers[i % len(markers)],
                        capsize=3, label=method)
        local = [e["gap_closed"]["mean"] for e in cell if e["method"] == "rlhf_local"]
        if local:
            ax.axhline(sum(local) / len(local), color="black", lw=1, ls="--",
                       label="local RLHF")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("n, sampled pairs")
        ax.set_ylabel("fraction of RLHF gain closed")
        ax.set_title(f"{config['family']} {capacity}, {config['design']}, β = {beta:g}"
                     " (synthetic r*)", fontsize="medium")
        ax.legend(fontsize="x-small")
    save_figure(fig, path)
    plt.close(fig)


def _plot(summary: list[dict], x_key: str, fixed_key: str, fixed_value, path: str,
          log_x: bool, design: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = [e for e in summary if e[fixed_key] == fixed_value and e["method"] != "base"]
    xs = list(dict.fromkeys(e[x_key] for e in cell))
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = list(dict.fromkeys(e["method"] for e in cell))
    for index, method in enumerate(methods):
        marker, shift = method_style(index, len(methods))
        pts = {e[x_key]: e["gap_closed"] for e in cell if e["method"] == method}
        # a small sideways shift keeps equal values visible (multiplicative on a log axis)
        pos = [xs.index(x) + shift if not log_x else x * 10 ** (shift / 4) for x in pts]
        ax.errorbar(pos, [p["mean"] for p in pts.values()], [p["std"] for p in pts.values()],
                    marker=marker, capsize=3, label=method)
    if log_x:
        ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xlabel(x_key)
    ax.set_ylabel("fraction of RLHF gain closed")
    ax.set_title((f"{design} design, " if design else "") + f"{fixed_key} = {fixed_value}")
    ax.legend(fontsize="small")
    save_figure(fig, path)
    plt.close(fig)


def write_outputs(result: dict, run_dir: str, plots: bool = True) -> list[str]:
    """results.json, results.md and (when the grid has them) gap-vs-capacity / gap-vs-β."""
    os.makedirs(run_dir, exist_ok=True)
    paths = [os.path.join(run_dir, "results.json"), os.path.join(run_dir, "results.md")]
    atomic_write_text(paths[0], json.dumps(result, indent=1))
    atomic_write_text(paths[1], markdown_table(result["summary"]))
    config = result["config"]
    if not plots:
        return paths
    if any("pairs" in e for e in result["summary"]):
        paths.append(os.path.join(run_dir, "gap_vs_pairs.png"))
        plot_pairs_sweep(result["summary"], config, paths[-1])
    if len(config["capacities"]) > 1:
        paths.append(os.path.join(run_dir, "gap_vs_capacity.png"))
        _plot(result["summary"], "capacity", "beta", config["betas"][0], paths[-1], False,
              str(config.get("design", "")))
    if len(config["betas"]) > 1:
        paths.append(os.path.join(run_dir, "gap_vs_beta.png"))
        _plot(result["summary"], "beta", "capacity", config["capacities"][0], paths[-1], True,
              str(config.get("design", "")))
    return paths
