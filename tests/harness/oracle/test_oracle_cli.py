"""The ``auxdpo oracle`` CLI: tiny runs end to end, capped solves flagged, relinearised rows."""

import json

import pytest
import torch

from auxdpo.cli import main

DT = torch.float64


def test_cli_json_tiny_run(tmp_path, capsys):
    code = main(["oracle", "--vocab-size", "3", "--response-length", "2", "--prompt-length",
                 "2", "--prompts", "3", "--heldout", "1", "--hidden", "8", "--layers", "1",
                 "--warmup-steps", "2", "--seeds", "2", "--beta", "50", "--max-iter", "60",
                 "--quiet", "--json",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["gap_closed"]) == {"dpo", "ipo", "dpop", "auxdpo", "rlhf_local"}
    assert out["gap_closed"]["rlhf_local"]["mean"] == pytest.approx(1.0, abs=0.05)
    assert (tmp_path / "run" / "results.md").read_text().startswith("| capacity")
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    assert len(rows) == 2 * 7                       # seeds × (base, rlhf, rlhf_local, 4)


def test_solves_stopped_at_the_iteration_cap_are_flagged(tmp_path, capsys):
    tiny = ["oracle", "--vocab-size", "3", "--response-length", "2", "--prompt-length", "2",
            "--prompts", "3", "--heldout", "1", "--hidden", "8", "--layers", "1",
            "--warmup-steps", "2", "--seeds", "2", "--beta", "50", "--methods", "dpo", "ipo",
            "--quiet"]
    assert main(tiny + ["--max-iter", "2", "--out", str(tmp_path / "capped")]) == 0
    table = capsys.readouterr().out
    summary = json.loads((tmp_path / "capped" / "results.json").read_text())["summary"]
    capped = {e["method"]: e["capped"] for e in summary}
    assert capped["dpo"] == capped["ipo"] == 2    # 2 L-BFGS iterations: not enough
    assert capped["base"] == capped["rlhf_local"] == 0    # closed forms are never capped
    assert "| dpo ⚠ | 2 | 2 |" in table and "stopped at the iteration cap" in table
    assert main(tiny + ["--max-iter", "200", "--out", str(tmp_path / "free")]) == 0
    table = capsys.readouterr().out
    summary = json.loads((tmp_path / "free" / "results.json").read_text())["summary"]
    assert all(e["capped"] == 0 for e in summary) and "⚠" not in table


def test_cli_relinearised_row_records_its_rounds(tmp_path, capsys):
    code = main(["oracle", "--vocab-size", "3", "--response-length", "2", "--prompt-length",
                 "2", "--prompts", "3", "--heldout", "1", "--hidden", "8", "--layers", "1",
                 "--warmup-steps", "2", "--seeds", "1", "--beta", "2", "--max-iter", "60",
                 "--methods", "auxdpo", "--relinearise", "3", "--quiet", "--json",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    assert set(json.loads(capsys.readouterr().out)["gap_closed"]) == {
        "auxdpo", "auxdpo-relin", "rlhf_local"}
    rows = {r["method"]: r for r in json.loads(
        (tmp_path / "run" / "results.json").read_text())["rows"]}
    gaps = rows["auxdpo-relin"]["round_gaps"]
    assert len(gaps) == 3 and gaps[-1] == rows["auxdpo-relin"]["gap_closed"]
    assert gaps[0] == rows["auxdpo"]["gap_closed"]                # round 1 is plain AuxDPO
    assert abs(1 - gaps[-1]) < abs(1 - gaps[0])                   # closer to the exact optimum
    assert "round_gaps" not in rows["auxdpo"]
