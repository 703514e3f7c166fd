"""docs/results.md's finite-sample tables and figure, from ``auxdpo oracle --finite-solver
full-batch`` n-sweep run folders.

    .venv/bin/python docs/tools/finite_tables.py RUN_DIR [RUN_DIR ...] [--figure PATH]
        [--methods PATTERN ...] [--default VARIANT]

A RUN_DIR may be ``DIR_A+DIR_B``: one cell run in parts (``--first-seed``), rows pooled.

Per run folder (one cell: family, capacity, design, β), a markdown table of gap closed
(mean ± std over seeds) with one row per method and one column per n, followed by the number
of seeds whose J falls below θ₀'s (gap < 0) at each n, and the iteration-capped solves.
``--figure`` draws every cell as one panel of gap closed against n (the figure in
docs/results.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

ORDER = ("rlhf_local", "dpo", "ipo", "iw-dpo", "rlhf_2stage", "auxdpo")


def load(run_dir: str) -> dict:
    parts = [json.loads((Path(d) / "results.json").read_text()) for d in run_dir.split("+")]
    result = parts[0]
    same = ("family", "capacities", "betas", "design", "methods", "max_iter")
    for part in parts[1:]:
        if any(part["config"][k] != result["config"][k] for k in same):
            raise SystemExit(f"{run_dir}: the parts are not runs of one cell")
        seeds = {r["seed"] for r in result["rows"]}
        result["rows"] = result["rows"] + [r for r in part["rows"] if r["seed"] not in seeds]
    return result


def title(result: dict) -> str:
    config = result["config"]
    capacity, beta = config["capacities"][0], config["betas"][0]
    finite = config.get("finite", {})
    k, labels = finite.get("responses_per_prompt", 0), finite.get("labels", "hard")
    if k:
        sampler = {"policy": "on-policy", "design": f"{config['design']} marginal",
                   "disagreeing": "disagreeing"}[finite.get("sampler", "design")]
        data = f"groups of {k} ({sampler}), {labels} labels"
    else:
        data = config["design"] + ("" if labels == "hard" else f", {labels} labels")
    return f"{config['family']} {capacity}, {data}, β = {beta:g}"


def keep(method: str, patterns: list[str] | None) -> bool:
    """Methods to show: every one, or those matching a shell pattern of ``--methods``."""
    return patterns is None or method in ("rlhf_local",) or any(
        fnmatch.fnmatchcase(method, p) for p in patterns)


def _methods(rows: list[dict]) -> list[str]:
    names = list(dict.fromkeys(r["method"] for r in rows if r["method"] not in ("base",
                                                                               "rlhf")))
    return sorted(names, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def table(result: dict, max_iter: int, patterns: list[str] | None = None) -> str:
    rows = [r for r in result["rows"] if keep(r["method"], patterns)]
    ns = sorted({r["pairs"] for r in rows})
    seeds = len({r["seed"] for r in rows})
    lines = [f"**{title(result)}** ({seeds} seeds; gap closed, mean ± std; "
             "in brackets: seeds below θ₀ / solves stopped at the iteration cap)", "",
             "| method | " + " | ".join(f"n = {n:,}" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]
    for method in _methods(rows):
        cells = []
        for n in ns:
            members = [r for r in rows if r["method"] == method and r["pairs"] == n]
            gaps = [r["gap_closed"] for r in members]
            mean = sum(gaps) / len(gaps)
            std = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
            below = sum(g < 0 for g in gaps)
            capped = sum(r.get("capped", r.get("iterations", 0) >= max_iter) for r in members)
            cells.append(f"{mean:.3f} ± {std:.3f} [{below}/{capped}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    ppr = {n: sum(r["pairs_per_response"] for r in rows if r["pairs"] == n and
                  r["method"] == "dpo") / seeds for n in ns}
    lines.append("| *pairs per seen response* | " + " | ".join(f"{ppr[n]:.1f}" for n in ns)
                 + " |")
    return "\n".join(lines) + "\n"


def figure(results: list[dict], path: str, patterns: list[str] | None = None) -> None:
    """Gap closed against n, a panel per cell; means outside [−2.5, 1.5] are drawn at the edge
    with an arrow and their value, points with a solve stopped at its cap ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auxdpo.harness.evaluation.report import save_figure
    from auxdpo.harness.oracle.runner import aggregate

    cols = min(len(results), 4)
    rows_ = -(-len(results) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5.5 * cols, 4.8 * rows_), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.set_visible(False)
    markers = "osD^vP*Xh<>"
    low, high = -2.5, 1.5
    # one colour and marker per method across panels (the large-n run names AuxDPO without
    # its key: it runs response keys only)
    every = list(dict.fromkeys(m for r in results for m in _methods(r["rows"])
                               if keep(m, patterns)))
    for ax, result in zip(axes.flat, results):
        summary = aggregate(result["rows"])
        labelled: set[int] = set()
        methods = [m for m in _methods(result["rows"]) if m != "rlhf_local"
                   and keep(m, patterns)]
        for i, method in enumerate(methods):
            pts = sorted((e["pairs"], e["gap_closed"], e.get("capped", 0)) for e in summary
                         if e["method"] == method)
            shift = 1.0 + 0.03 * (i - (len(methods) - 1) / 2)
            k = every.index(method)
            xs = [n * shift for n, _, _ in pts]
            means = [g["mean"] for _, g, _ in pts]
            colour, marker = f"C{k % 10}", markers[k % len(markers)]
            ax.errorbar(xs, [min(max(m, low), high) for m in means],
                        [g["std"] if low <= g["mean"] <= high else 0 for _, g, _ in pts],
                        marker=marker, color=colour, ms=4, capsize=2, lw=1, label=method)
            for x, m, (_, _, capped) in zip(xs, means, pts):
                if capped:           # a solve of this point stopped at its cap: hollow ring
                    ax.plot(x, min(max(m, low), high), marker="o", ms=9, mfc="none",
                            color=colour, lw=0)
                if not low <= m <= high:     # off the axis: an arrow, the value once per n
                    edge = low if m < low else high
                    text = "" if round(x / shift) in labelled else f"{m:.2g}"
                    labelled.add(round(x / shift))
                    ax.annotate(text, (x, edge), xytext=(0, 10 if m < low else -14),
                                textcoords="offset points", fontsize="x-small",
                                color=colour, ha="center",
                                arrowprops={"arrowstyle": "->", "color": colour})
        local = [r["gap_closed"] for r in result["rows"] if r["method"] == "rlhf_local"]
        ax.axhline(sum(local) / len(local), color="black", lw=1, ls="--", label="local RLHF")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xscale("log")
        shown = [min(max(e["gap_closed"]["mean"] - e["gap_closed"]["std"], low), high)
                 for e in summary if e["method"] in methods]
        ax.set_ylim(min(shown + [0.0]) - 0.15, high)
        ax.set_xlabel("n, sampled pairs")
        ax.set_ylabel("fraction of RLHF gain closed")
        ax.set_title(title(result).replace(", ", "\n", 1), fontsize="medium")
        ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout(h_pad=2.5)
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--figure")
    parser.add_argument("--methods", nargs="+", metavar="PATTERN",
                        help="only these methods (shell patterns, e.g. 'auxdpo*')")
    parser.add_argument("--default", metavar="VARIANT",
                        help="show this variant as `auxdpo` (a sweep run before the defaults "
                             "were set names every variant by its settings)")
    args = parser.parse_args()
    results = [load(r) for r in args.runs]
    if args.default:
        for result in results:
            for row in result["rows"]:
                if row["method"] == args.default:
                    row["method"] = "auxdpo"
        if args.methods:
            args.methods = ["auxdpo" if m == args.default else m for m in args.methods]
    for result in results:
        print(table(result, result["config"]["max_iter"], args.methods))
    if args.figure:
        figure(results, args.figure, args.methods)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
