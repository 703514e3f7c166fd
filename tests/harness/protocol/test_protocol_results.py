"""Tables, figure and data files from hand-made results (values checked by hand)."""

import csv
import json
import math
import os

import pytest
from protocol_fakes import Interrupting, fake_base, small_recipe

from auxdpo.harness.protocol.results import collect_results, table1, table2, write_report
from auxdpo.harness.protocol.runner import run_protocol


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("protocol"))
    recipe = small_recipe()
    run_protocol(recipe, out, run_fn=Interrupting(), base_fn=fake_base, progress=False,
                 report=False)
    return recipe, out


def test_table1_changes_vs_base_and_marks(finished):
    recipe, out = finished
    runs, bases = collect_results(out)
    table = table1(recipe, runs, bases)
    assert table.rows == ("MMLU-Pro (ID)", "MMLU-Pro (OOD)", "RewardBench 2 (ID)",
                          "RewardBench 2 (OOD)")
    # MMLU-Pro ID at 100%: dpo = 50 + 2 + 1 + mean(0, 1) = 53.5 → +7%; auxdpo 57.5 → +15%
    cell = table.cell("MMLU-Pro (ID)", "dpo")
    assert (cell.base, cell.score) == pytest.approx((50.0, 53.5))
    assert cell.change_pct == pytest.approx(7.0)
    assert table.cell("MMLU-Pro (ID)", "auxdpo").change_pct == pytest.approx(15.0)
    assert table.cell("MMLU-Pro (ID)", "auxdpo").mark == "best"
    assert table.cell("MMLU-Pro (ID)", "dpop").mark == "second"  # 55.5 → +11%
    assert table.cell("MMLU-Pro (OOD)", "dpo").score == pytest.approx(54.0)
    # RewardBench 2 ID: base 40, dpo 40 + 2 + 1 + 0.5 = 43.5 → +8.75%
    assert table.cell("RewardBench 2 (ID)", "dpo").change_pct == pytest.approx(8.75)


def test_table1_variants_use_their_own_metric_and_base(finished):
    recipe, out = finished
    runs, bases = collect_results(out)
    implicit = table1(recipe, runs, bases, "implicit_reward_accuracy")
    cell = implicit.cell("MMLU-Pro (ID)", "dpo")  # base = the base's log-prob accuracy
    assert (cell.base, cell.score) == pytest.approx((50.0, 63.5))
    official = table1(recipe, runs, bases, "rb2_official_mean")
    assert official.rows == ("RewardBench 2 (ID)", "RewardBench 2 (OOD)")
    assert official.cell("RewardBench 2 (ID)", "dpo").change_pct == pytest.approx(
        100 * (33.5 - 30) / 30)


def test_table1_skips_rows_with_missing_runs(finished):
    recipe, out = finished
    runs, bases = collect_results(out)
    partial = [r for r in runs if not (r["run"]["dataset"] == "rewardbench2"
                                       and r["run"]["method"] == "ipo")]
    assert table1(recipe, partial, bases).rows == ("MMLU-Pro (ID)", "MMLU-Pro (OOD)")
    assert table1(recipe, [], bases) is None


def test_table2_per_subject_drops_base_zero_rows(finished):
    recipe, out = finished
    runs, bases = collect_results(out)
    table, dropped = table2(recipe, runs, bases)
    assert dropped == ["math"]
    assert table.rows == ("overall", "law")
    assert table.methods[:2] == ("dpo (ID)", "dpo (OOD)")
    assert len(table.methods) == 8
    assert table.cell("law", "auxdpo (OOD)").score == pytest.approx(58.0)
    assert table.cell("law", "auxdpo (OOD)").change_pct == pytest.approx(16.0)


def test_write_report_files(finished):
    recipe, out = finished
    written = write_report(recipe, out)
    for name in ("table1", "table1_implicit", "table1_rb2_official", "table2"):
        assert os.path.isfile(os.path.join(out, "tables", name + ".md"))
        assert os.path.isfile(os.path.join(out, "tables", name + ".csv"))
    markdown = open(os.path.join(out, "tables", "table1.md")).read()
    assert "| MMLU-Pro (ID) | 50.00 | 53.50 (+7.00%) |" in markdown
    assert "**57.50 (+15.00%)**" in markdown and "<u>55.50 (+11.00%)</u>" in markdown
    assert "math" in open(os.path.join(out, "tables", "table2.md")).read().splitlines()[-1]
    with open(written["figure"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(written["figure"]) < 200_000
    with open(os.path.join(out, "runs.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 64
    with open(os.path.join(out, "summary.csv")) as handle:
        summary = [r for r in csv.DictReader(handle) if r["metric"] == "logp_accuracy"
                   and (r["dataset"], r["setting"], r["method"], r["capacity"])
                   == ("mmlu-pro", "id", "dpo", "100%")]
    (row,) = summary  # seeds 0.53 and 0.54: mean 0.535, sample std 0.01/√2
    assert float(row["mean"]) == pytest.approx(0.535)
    assert float(row["std"]) == pytest.approx(0.01 / math.sqrt(2))
    data = json.load(open(os.path.join(out, "summary.json")))
    assert data["table_capacity"] == "100%"


def test_cli_report_and_dry_run(finished, tmp_path, capsys):
    from auxdpo.cli import main

    _, out = finished
    assert main(["protocol", "report", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "Table 1 (held-out pairwise log-prob accuracy)" in printed
    assert "| MMLU-Pro (ID) | 50.00 | 53.50 (+7.00%) |" in printed
    assert f"figure: {os.path.join(out, 'figures', 'accuracy_vs_capacity.png')}" in printed
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: tiny\ngrid: {methods: [dpo], settings: [id], datasets: [mmlu-pro],"
                      " capacities: ['50%', lora:4], seeds: 1}\n")
    assert main(["protocol", "run", "--recipe", str(recipe), "--out", out, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "recipe: tiny  runs: 2  finished: 1  table capacity: lora:4"
    assert lines[1:] == ["  mmlu-pro__id__dpo__cap-50pct__seed0  preset=last:0.5",
                         "  mmlu-pro__id__dpo__cap-lora-4__seed0  preset=lora:4"]
    assert main(["protocol", "report", "--out", str(tmp_path / "none")]) == 2
