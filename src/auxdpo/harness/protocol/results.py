"""Tables and figures from the runner's result files (the paper's Tables 1-2, Figures 4/5).

* Table 1: rows data set × setting, one column per method: mean held-out pairwise log-prob
  accuracy over seeds at the table capacity, with the base model's accuracy and the
  percentage change vs base, best and second best marked (:mod:`auxdpo.harness.evaluation.report`).
  Written also for the implicit-reward accuracy and, for RewardBench 2, the official best-of-N mean.
* Table 2: MMLU-Pro accuracy per subject (and overall), columns method × setting, by option
  log-likelihood, or by generated letter when the recipe has ``eval.generate``.
* Figure: accuracy vs trainable capacity per data set × setting panel, one curve per method
  (mean ± 1 std over seeds), dashed base line.
* ``runs.csv`` (one line per run), ``summary.csv`` / ``summary.json`` (mean, std, n per
  configuration and metric).

Only complete cells are tabulated: a row of Table 1 appears once every method has at least
one finished seed at the table capacity.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from typing import Any

from auxdpo.files import atomic_write_text
from auxdpo.harness.evaluation.report import (
    comparison_table,
    plot_accuracy_curves,
    save_figure,
    summarize_runs,
    to_markdown,
    write_table,
)
from auxdpo.harness.protocol.recipe import Recipe
from auxdpo.harness.protocol.store import read_result

__all__ = ["DATASET_LABELS", "METRICS", "collect_results", "metric_value", "table1", "table2",
           "accuracy_figure", "write_report"]

DATASET_LABELS = {"mmlu-pro": "MMLU-Pro", "rewardbench2": "RewardBench 2"}
# metric name → path into a run's metrics, and which data sets have it
METRICS = {
    "logp_accuracy": (("pairwise", "logp_accuracy"), ("mmlu-pro", "rewardbench2")),
    "implicit_reward_accuracy": (("pairwise", "implicit_reward_accuracy"),
                                 ("mmlu-pro", "rewardbench2")),
    "rb2_official_mean": (("rewardbench2", "logp", "mean"), ("rewardbench2",)),
    "mmlu_option_accuracy": (("mmlu_pro", "options", "overall"), ("mmlu-pro",)),
    "mmlu_generation_accuracy": (("mmlu_pro", "generation", "overall"), ("mmlu-pro",)),
}


def collect_results(out_dir: str) -> tuple[list[dict], dict[str, dict]]:
    """(finished run records, base records by data set) read from ``out_dir``."""
    runs, bases = [], {}
    for sub, target in (("runs", runs), ("base", None)):
        folder = os.path.join(out_dir, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if not name.endswith(".json") or name.startswith("."):
                continue
            record = read_result(os.path.join(folder, name))
            if record is None:
                continue
            if target is None:
                bases[record.get("dataset", name[:-5])] = record
            else:
                target.append(record)
    return runs, bases


def metric_value(metrics: dict, name: str) -> float | None:
    """A metric of :data:`METRICS` from a metrics dict, or None when absent."""
    value: Any = metrics
    for key in METRICS[name][0]:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def _grouped(runs: list[dict], metric: str) -> dict[tuple, list[float]]:
    """(dataset, setting, method, capacity) → [value per seed], seeds in order."""
    groups: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for record in runs:
        run = record["run"]
        value = metric_value(record["metrics"], metric)
        if value is not None:
            key = (run["dataset"], run["setting"], run["method"], run["capacity"])
            groups[key].append((run["seed"], value))
    return {key: [v for _, v in sorted(values)] for key, values in groups.items()}


def table1(recipe: Recipe, runs: list[dict], bases: dict[str, dict],
           metric: str = "logp_accuracy"):
    """Table 1 as a :class:`~auxdpo.harness.evaluation.report.ComparisonTable` (accuracy in %), or None
    if empty.

    The base of a row is the base model's value of ``metric``; for the implicit-reward
    accuracy (undefined for the base, whose implicit reward is 0) it is its log-prob accuracy.
    """
    groups = _grouped(runs, metric)
    base_metric = "logp_accuracy" if metric == "implicit_reward_accuracy" else metric
    base, scores = {}, {}
    for dataset in recipe.grid.datasets:
        if dataset not in METRICS[metric][1] or dataset not in bases:
            continue
        base_value = metric_value(bases[dataset]["metrics"], base_metric)
        for setting in recipe.grid.settings:
            cells = {m: groups.get((dataset, setting, m, recipe.table_capacity))
                     for m in recipe.grid.methods}
            if base_value is None or not base_value or not all(cells.values()):
                continue
            row = f"{DATASET_LABELS[dataset]} ({setting.upper()})"
            base[row] = 100 * base_value
            scores[row] = {m: 100 * summarize_runs(v)[0] for m, v in cells.items()}
    if not scores:
        return None
    return comparison_table(base, scores, metric=f"{metric.replace('_', ' ')} (%)")


def _per_subject(metrics: dict, kind: str) -> dict[str, float] | None:
    part = (metrics.get("mmlu_pro") or {}).get(kind)
    if not part:
        return None
    return {"overall": part["overall"], **part["per_category"]}


def table2(recipe: Recipe, runs: list[dict], bases: dict[str, dict]):
    """Table 2: per-subject MMLU-Pro accuracy (%) at the table capacity; returns
    ``(ComparisonTable or None, rows dropped because the base scores 0 there)``."""
    kind = "generation" if recipe.eval.generate else "options"
    base_subjects = _per_subject(bases.get("mmlu-pro", {}).get("metrics", {}), kind)
    if base_subjects is None:
        return None, []
    columns = [(m, s) for m in recipe.grid.methods for s in recipe.grid.settings]
    values: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in runs:
        run = record["run"]
        subjects = _per_subject(record["metrics"], kind)
        if run["dataset"] != "mmlu-pro" or run["capacity"] != recipe.table_capacity or not subjects:
            continue
        for subject, value in subjects.items():
            values[(run["method"], run["setting"])][subject].append(value)
    if not all(col in values for col in columns):
        return None, []
    base, scores, dropped = {}, {}, []
    for subject in base_subjects:
        if base_subjects[subject] == 0:
            dropped.append(subject)
            continue
        base[subject] = 100 * base_subjects[subject]
        scores[subject] = {f"{m} ({s.upper()})": 100 * summarize_runs(values[(m, s)][subject])[0]
                           for m, s in columns}
    if not scores:
        return None, dropped
    label = "generated-answer" if kind == "generation" else "option log-likelihood"
    return comparison_table(base, scores, metric=f"MMLU-Pro {label} accuracy (%)"), dropped


def accuracy_figure(recipe: Recipe, runs: list[dict], bases: dict[str, dict],
                    metric: str = "logp_accuracy"):
    """Figures 4/5 analog: one panel per data set × setting; returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _grouped(runs, metric)
    datasets = [d for d in recipe.grid.datasets if d in METRICS[metric][1]]
    settings = recipe.grid.settings
    figure, axes = plt.subplots(len(datasets), len(settings), squeeze=False,
                                figsize=(4.2 * len(settings), 3.2 * len(datasets)))
    for i, dataset in enumerate(datasets):
        base_value = metric_value(bases.get(dataset, {}).get("metrics", {}), metric)
        for j, setting in enumerate(settings):
            curves = {m: {c: [100 * v for v in groups[(dataset, setting, m, c)]]
                          for c in recipe.grid.capacities if (dataset, setting, m, c) in groups}
                      for m in recipe.grid.methods}
            curves = {m: c for m, c in curves.items() if c}
            ax = axes[i][j]
            if not curves:
                ax.set_axis_off()
                continue
            synthetic = dataset == "rewardbench2" and recipe.data.rewardbench2 == "synthetic"
            title = f"{DATASET_LABELS[dataset]} ({setting.upper()})" + \
                (", SYNTHETIC data" if synthetic else "")
            plot_accuracy_curves(curves, None if base_value is None else 100 * base_value,
                                 ax=ax, title=title,
                                 xlabel="trainable capacity",
                                 ylabel=f"{metric.replace('_', ' ')} (%)")
    figure.suptitle(f"{recipe.name}: held-out {metric.replace('_', ' ')}, β = "
                    f"{recipe.train.beta:g}, mean ± 1 std over seeds")
    figure.tight_layout()
    return figure


def _summary(runs: list[dict]) -> list[dict]:
    rows = []
    for metric in METRICS:
        for (dataset, setting, method, capacity), values in sorted(_grouped(runs, metric).items()):
            mean, std, n = summarize_runs(values)
            rows.append({"dataset": dataset, "setting": setting, "method": method,
                         "capacity": capacity, "metric": metric, "mean": mean, "std": std,
                         "n_seeds": n})
    return rows


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _run_rows(runs: list[dict]) -> list[dict]:
    return [{**record["run"], "preset": record.get("preset"), "seconds": record.get("seconds"),
             **{m: metric_value(record["metrics"], m) for m in METRICS}} for record in runs]


def write_report(recipe: Recipe, out_dir: str) -> dict[str, str]:
    """Write every table (md/csv/json), the figure (PNG) and the data files; return paths."""
    runs, bases = collect_results(out_dir)
    tables_dir, written = os.path.join(out_dir, "tables"), {}
    for name, metric in (("table1", "logp_accuracy"), ("table1_implicit",
                                                       "implicit_reward_accuracy"),
                         ("table1_rb2_official", "rb2_official_mean")):
        table = table1(recipe, runs, bases, metric)
        if table is not None:
            _write_all(table, os.path.join(tables_dir, name), written)
    table, dropped = table2(recipe, runs, bases)
    if table is not None:
        _write_all(table, os.path.join(tables_dir, "table2"), written, dropped)
    if runs:
        import matplotlib.pyplot as plt

        figure = accuracy_figure(recipe, runs, bases)
        written["figure"] = os.path.join(out_dir, "figures", "accuracy_vs_capacity.png")
        save_figure(figure, written["figure"])
        plt.close(figure)
    data = {"runs.csv": _csv(_run_rows(runs)), "summary.csv": _csv(_summary(runs)),
            "summary.json": json.dumps({"recipe": recipe.name,
                                        "table_capacity": recipe.table_capacity,
                                        "base": {d: b["metrics"] for d, b in bases.items()},
                                        "summary": _summary(runs)}, indent=1) + "\n"}
    for name, text in data.items():
        written[name] = os.path.join(out_dir, name)
        atomic_write_text(written[name], text)
    return written


def _write_all(table, stem: str, written: dict, dropped: list[str] | None = None) -> None:
    for extension in (".csv", ".json"):
        write_table(table, stem + extension)
    text = to_markdown(table, with_scores=True)
    if dropped:
        text += f"Rows not shown (base accuracy 0, change undefined): {', '.join(dropped)}.\n"
    atomic_write_text(stem + ".md", text)
    written[os.path.basename(stem)] = stem + ".md"
