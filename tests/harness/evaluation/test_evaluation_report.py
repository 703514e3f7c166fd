"""Tables (change vs base, best/second marks, markdown/CSV/JSON) and accuracy-curve figures."""

import csv
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from auxdpo.harness.evaluation.report import (  # noqa: E402
    comparison_table,
    percent_change,
    plot_accuracy_curves,
    save_figure,
    summarize_runs,
    to_csv,
    to_json,
    to_markdown,
    write_table,
)

BASE = {"MMLU-Pro ID": 40.0, "RB2 OOD": 50.0}
SCORES = {"MMLU-Pro ID": {"DPO": 44.0, "AuxDPO": 50.0, "IPO": 42.0},
          "RB2 OOD": {"DPO": 45.0, "AuxDPO": 55.0, "IPO": 55.0}}


def test_percent_change_is_relative_to_base():
    assert percent_change(44.0, 40.0) == pytest.approx(10.0)
    assert percent_change(45.0, 50.0) == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="base score of 0"):
        percent_change(1.0, 0.0)


def test_marks_best_second_and_ties():
    table = comparison_table(BASE, SCORES)
    # MMLU: +10, +25, +5 → AuxDPO best, DPO second
    assert [table.cell("MMLU-Pro ID", m).mark for m in ("DPO", "AuxDPO", "IPO")] == [
        "second", "best", ""]
    # RB2: −10, +10, +10 → AuxDPO and IPO share best, DPO (next distinct value) second
    assert [table.cell("RB2 OOD", m).mark for m in ("DPO", "AuxDPO", "IPO")] == [
        "second", "best", "best"]
    assert table.cell("RB2 OOD", "DPO").degraded
    assert table.cell("RB2 OOD", "DPO").change_pct == pytest.approx(-10.0)


def test_markdown_exact():
    text = to_markdown(comparison_table(BASE, SCORES))
    lines = text.splitlines()
    assert lines[0] == "|  | base accuracy (%) | DPO | AuxDPO | IPO |"
    assert lines[2] == "| MMLU-Pro ID | 40.00 | <u>10.00</u> | **25.00** | 5.00 |"
    assert lines[3] == "| RB2 OOD | 50.00 | <u>-10.00 ↓</u> | **10.00** | **10.00** |"
    with_scores = to_markdown(comparison_table(BASE, SCORES), with_scores=True).splitlines()
    assert with_scores[2] == ("| MMLU-Pro ID | 40.00 | <u>44.00 (+10.00%)</u> | "
                              "**50.00 (+25.00%)** | 42.00 (+5.00%) |")


def test_csv_and_json_round_trip(tmp_path):
    table = comparison_table(BASE, SCORES)
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert len(rows) == 6
    first = rows[0]
    assert (first["row"], first["method"], float(first["score"]), float(first["change_pct"]),
            first["mark"], first["degraded"]) == ("MMLU-Pro ID", "DPO", 44.0, 10.0, "second",
                                                  "false")
    data = json.loads(to_json(table))
    assert data["methods"] == ["DPO", "AuxDPO", "IPO"]
    assert data["cells"][4] == {"row": "RB2 OOD", "method": "AuxDPO", "base": 50.0,
                                "score": 55.0, "change_pct": 10.0, "mark": "best",
                                "degraded": False}
    for suffix, reader in ((".md", str), (".csv", str), (".json", json.loads)):
        path = tmp_path / "out" / f"table{suffix}"
        write_table(table, path)
        assert reader(path.read_text())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "table.csv", "table.json", "table.md"]  # no temporary files left behind
    with pytest.raises(ValueError, match="extension"):
        write_table(table, tmp_path / "table.txt")


def test_table_rejects_missing_base_and_ragged_methods():
    with pytest.raises(ValueError, match="no base score"):
        comparison_table({}, SCORES)
    with pytest.raises(ValueError, match="has methods"):
        comparison_table(BASE, {"MMLU-Pro ID": {"DPO": 1.0}, "RB2 OOD": {"IPO": 1.0}})


def test_summarize_runs_sample_std():
    mean, std, n = summarize_runs([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx((5 / 3) ** 0.5)  # Σ(x−2.5)² = 5, ddof = 1
    assert summarize_runs([7.0]) == (7.0, 0.0, 1)


def test_accuracy_curves_error_bars_and_dashed_base(tmp_path):
    runs = {"DPO": {"100%": [60.0], "25%": [50.0, 52.0]},
            "AuxDPO": {"LoRA r=4": [40.0, 44.0], "25%": [55.0, 57.0, 59.0], "50%": [58.0]}}
    ax = plot_accuracy_curves(runs, base=45.0, title="MMLU-Pro ID")
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert labels == ["LoRA r=4", "25%", "50%", "100%"]  # named first, then numeric ascending
    dpo, aux = ax.containers
    # categories 1 and 3 ("25%", "100%"), DPO shifted left of AuxDPO (overlap stays visible)
    assert list(dpo.lines[0].get_xdata()) == pytest.approx([1 - 0.12, 3 - 0.12], abs=1e-12)
    assert list(aux.lines[0].get_xdata()) == pytest.approx([0.12, 1.12, 2.12], abs=1e-12)
    assert list(dpo.lines[0].get_ydata()) == [51.0, 60.0]
    segments = dpo.lines[2][0].get_segments()
    std = 2 ** 0.5  # sample std of (50, 52)
    assert segments[0][0][1] == pytest.approx(51.0 - std)
    assert segments[0][1][1] == pytest.approx(51.0 + std)
    assert segments[1][0][1] == segments[1][1][1] == 60.0  # one seed: no bar
    assert list(aux.lines[0].get_ydata()) == [42.0, 57.0, 58.0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [45.0, 45.0]
    path = tmp_path / "fig" / "curve.png"
    save_figure(ax.figure, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]
    plt.close(ax.figure)


def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    import os

    from auxdpo.harness.evaluation.report import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "t.md", "x\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "t.md").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["t.md"]


def test_overlapping_methods_get_own_marker_and_offset():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auxdpo.harness.evaluation.report import method_style, plot_accuracy_curves

    assert method_style(0, 1) == ("o", 0.0)
    assert [round(method_style(i, 3)[1], 12) for i in range(3)] == [-0.12, 0.0, 0.12]
    same = {"25%": [60.0, 62.0], "100%": [70.0, 70.0]}
    fig, ax = plt.subplots()
    plot_accuracy_curves({"dpo": same, "auxdpo": same}, ax=ax)
    lines = [container.lines[0] for container in ax.containers]  # the data lines
    assert len(lines) == 2
    assert lines[0].get_marker() != lines[1].get_marker()
    assert list(lines[0].get_ydata()) == list(lines[1].get_ydata())  # equal values, ...
    gap = [b - a for a, b in zip(lines[0].get_xdata(), lines[1].get_xdata())]
    assert gap == pytest.approx([0.24, 0.24], abs=1e-12)  # ... drawn side by side
    plt.close(fig)
