"""Tables (markdown, CSV, JSON) and figures in the form of the paper's results.

Tables follow Table 1/2: every row (a data set × setting, or a subject) has the base
(reference) model's score, and each method gets its score and its percentage change relative
to the base, ``100 · (score − base) / base``. Per row, the best change is marked best
(markdown ``**x**``) and the second best marked second (``<u>x</u>``); tied values share a
mark, and the second mark goes to the next distinct value. Changes below zero are flagged
``degraded`` (the paper prints them red; markdown appends ``↓``).

Figures follow Figures 4/5: accuracy against the trainable fraction (or capacity config),
one line per method with ±1 standard deviation error bars over seeds (sample std, ddof=1; 0
for a single seed), and a dashed line at the base model's score.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from auxdpo.files import atomic_write_text, publish

__all__ = ["TableCell", "ComparisonTable", "percent_change", "comparison_table", "to_markdown",
           "to_csv", "to_json", "write_table", "summarize_runs", "plot_accuracy_curves",
           "MARKERS", "method_style",
           "save_figure", "atomic_write_text"]


def percent_change(score: float, base: float) -> float:
    """``100 · (score − base) / base``; the base must be non-zero."""
    if base == 0:
        raise ValueError("percentage change is undefined for a base score of 0")
    return 100.0 * (score - base) / base


@dataclass(frozen=True)
class TableCell:
    """One method on one row: its score, change vs base (%), and its mark."""

    row: str
    method: str
    base: float
    score: float
    change_pct: float
    mark: str  # "best", "second" or ""
    degraded: bool


@dataclass(frozen=True)
class ComparisonTable:
    """Rows × methods of :class:`TableCell`, plus what the scores are (``metric``)."""

    metric: str
    rows: tuple[str, ...]
    methods: tuple[str, ...]
    cells: tuple[TableCell, ...]

    def cell(self, row: str, method: str) -> TableCell:
        """The cell of ``row`` and ``method``."""
        for cell in self.cells:
            if cell.row == row and cell.method == method:
                return cell
        raise KeyError((row, method))


def _marks(changes: Mapping[str, float]) -> dict[str, str]:
    distinct = sorted(set(changes.values()), reverse=True)
    best = distinct[0]
    second = distinct[1] if len(distinct) > 1 else None
    return {method: "best" if value == best else "second" if value == second else ""
            for method, value in changes.items()}


def comparison_table(base: Mapping[str, float], scores: Mapping[str, Mapping[str, float]],
                     metric: str = "accuracy (%)") -> ComparisonTable:
    """Build a table from ``base[row]`` and ``scores[row][method]`` (same methods every row)."""
    rows = tuple(scores)
    if not rows:
        raise ValueError("no rows")
    methods = tuple(scores[rows[0]])
    cells = []
    for row in rows:
        if row not in base:
            raise ValueError(f"row {row!r} has no base score")
        if tuple(scores[row]) != methods:
            raise ValueError(f"row {row!r} has methods {tuple(scores[row])}, expected {methods}")
        changes = {m: percent_change(scores[row][m], base[row]) for m in methods}
        marks = _marks(changes)
        cells += [TableCell(row, m, float(base[row]), float(scores[row][m]), changes[m],
                            marks[m], changes[m] < 0) for m in methods]
    return ComparisonTable(metric, rows, methods, tuple(cells))


def _decorate(text: str, cell: TableCell) -> str:
    text = text + " ↓" if cell.degraded else text
    return {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(cell.mark, text)


def to_markdown(table: ComparisonTable, with_scores: bool = False, digits: int = 2) -> str:
    """Markdown: ``| row | base | method… |``; cells are changes in % (or ``score (change%)``)."""
    header = ["", f"base {table.metric}", *table.methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [table.cell(row, method) for method in table.methods]
        texts = [f"{c.score:.{digits}f} ({c.change_pct:+.{digits}f}%)" if with_scores
                 else f"{c.change_pct:.{digits}f}" for c in cells]
        body = [_decorate(text, cell) for text, cell in zip(texts, cells)]
        lines.append("| " + " | ".join([row, f"{cells[0].base:.{digits}f}", *body]) + " |")
    unit = "score (% relative change vs base)" if with_scores else "% relative change vs base"
    lines.append(f"\nCells: {unit}; **best**, <u>second best</u>, ↓ below base.")
    return "\n".join(lines) + "\n"


def to_csv(table: ComparisonTable) -> str:
    """Long CSV: ``row,method,base,score,change_pct,mark,degraded`` (full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "method", "base", "score", "change_pct", "mark", "degraded"])
    for c in table.cells:
        writer.writerow([c.row, c.method, repr(c.base), repr(c.score), repr(c.change_pct),
                         c.mark, str(c.degraded).lower()])
    return buffer.getvalue()


def to_json(table: ComparisonTable) -> str:
    """``{"metric", "rows", "methods", "cells": [TableCell fields]}``."""
    return json.dumps({"metric": table.metric, "rows": list(table.rows),
                       "methods": list(table.methods),
                       "cells": [asdict(cell) for cell in table.cells]}, indent=2) + "\n"


def write_table(table: ComparisonTable, path: str | os.PathLike) -> None:
    """Write ``table`` atomically; the format follows the extension (.md, .csv, .json)."""
    writers = {".md": to_markdown, ".csv": to_csv, ".json": to_json}
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in writers:
        raise ValueError(f"{path}: table extension must be one of {sorted(writers)}")
    atomic_write_text(path, writers[extension](table))


def summarize_runs(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 — 0 for one run, n) of one configuration's seeds."""
    if len(values) == 0:
        raise ValueError("no runs to summarize")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0, 1
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance), len(values)


def _as_number(config: str) -> float | None:
    try:
        return float(str(config).strip().rstrip("%"))
    except ValueError:
        return None


def _config_order(runs: Mapping[str, Mapping[str, Sequence[float]]]) -> list[str]:
    seen: list[str] = []
    for per_config in runs.values():
        seen += [config for config in per_config if config not in seen]
    named = [config for config in seen if _as_number(config) is None]
    numeric = sorted((config for config in seen if _as_number(config) is not None),
                     key=_as_number)
    return named + numeric


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_style(index: int, count: int, spread: float = 0.24) -> tuple[str, float]:
    """Marker and x offset of the ``index``-th of ``count`` methods on a categorical axis:
    methods with equal values would hide each other, so each gets its own marker and a small
    sideways shift (``spread`` is the total width, in category units)."""
    offset = 0.0 if count < 2 else spread * (index / (count - 1) - 0.5)
    return MARKERS[index % len(MARKERS)], offset


def plot_accuracy_curves(runs: Mapping[str, Mapping[str, Sequence[float]]],
                         base: float | None = None, ax=None, title: str = "",
                         xlabel: str = "trainable parameters", ylabel: str = "accuracy (%)",
                         order: Sequence[str] | None = None):
    """Plot ``runs[method][config] = [accuracy per seed]`` on ``ax`` (a new figure if None).

    Configs (e.g. "25%", "50%", "LoRA r=4") sit on a categorical x axis in ``order``, by
    default the non-numeric ones first (the paper's constrained-capacity baselines, first-seen
    order), then the numeric ones ascending ("25%" < "100%"). Each method gets mean ± 1 std
    error bars; ``base`` draws a dashed line. Returns ax.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(4.5, 3.2))
    configs = list(order) if order is not None else _config_order(runs)
    for index, (method, per_config) in enumerate(runs.items()):
        marker, shift = method_style(index, len(runs))
        points = sorted((configs.index(c) + shift, *summarize_runs(v)[:2])
                        for c, v in per_config.items())
        xs, means, stds = zip(*points) if points else ((), (), ())
        ax.errorbar(xs, means, yerr=stds, marker=marker, capsize=3, label=method)
    if base is not None:
        ax.axhline(base, linestyle="--", color="gray", label="base")
    ax.set_xticks(range(len(configs)), configs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def save_figure(figure, path: str | os.PathLike) -> None:
    """Save a matplotlib figure atomically; the format follows the extension."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="." + extension)
    os.close(handle)
    try:
        figure.savefig(tmp, format=extension, bbox_inches="tight")
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
