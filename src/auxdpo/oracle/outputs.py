"""An oracle run's files: results.json, results.md (the table) and plots, written atomically."""

from __future__ import annotations

import json
import math
import os

from auxdpo.report import atomic_write_text, method_style, save_figure

__all__ = ["headline", "markdown_table", "write_outputs"]

COLUMNS = (("gap_closed", "gap closed", "{:.3f}"), ("reward", "E[r*]", "{:.4f}"),
           ("kl", "KL(π‖π₀)", "{:.2e}"), ("reversal", "reversal", "{:.3f}"),
           ("heldout_acc", "held-out acc", "{:.3f}"))


def _cell(stat: dict, fmt: str) -> str:
    if math.isnan(stat["mean"]):
        return "–"
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def markdown_table(summary: list[dict]) -> str:
    """One row per (capacity, β, method): every metric as mean ± std over seeds."""
    head = "| capacity | d | S·A | β | method | seeds | " + " | ".join(
        label for _, label, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (6 + len(COLUMNS))]
    for e in summary:
        cells = [_cell(e[key], fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {e['capacity']} | {e['dim']} | {e['responses']} | {e['beta']:g} | "
                     f"{e['method']} | {e['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(result: dict) -> dict:
    """The ``--json`` answer: headline cell's metrics per method, plus every cell."""
    config = result["config"]
    head = (config["capacities"][0], config["betas"][0])
    cell = [e for e in result["summary"] if (e["capacity"], e["beta"]) == head]
    out = {metric: {e["method"]: e[metric] for e in cell if e["method"] not in ("base",)}
           for metric in ("reward", "kl", "reversal", "heldout_acc")}
    out = {"gap_closed": result["gap_closed"], **out,
           "headline": {"capacity": head[0], "beta": head[1], "design": config["design"],
                        "seeds": config["seeds"]},
           "cells": result["summary"], "seconds": result["seconds"]}
    return out


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
    if len(config["capacities"]) > 1:
        paths.append(os.path.join(run_dir, "gap_vs_capacity.png"))
        _plot(result["summary"], "capacity", "beta", config["betas"][0], paths[-1], False,
              str(config.get("design", "")))
    if len(config["betas"]) > 1:
        paths.append(os.path.join(run_dir, "gap_vs_beta.png"))
        _plot(result["summary"], "beta", "capacity", config["capacities"][0], paths[-1], True,
              str(config.get("design", "")))
    return paths
