"""`auxdpo data check` on good and broken fixtures, and on the real rows when present."""

import json

import pytest

from auxdpo.cli import main
from data_fixtures import (
    REAL_DATA,
    flat_ultrafeedback,
    h4_ultrafeedback,
    mmlu_pro_rows,
    rewardbench2_rows,
    rlhflow_ultrafeedback,
    write,
)


def _run_json(capsys, path, fmt):
    code = main(["data", "check", str(path), "--format", fmt, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("rows, fmt, pairs", [
    (flat_ultrafeedback(), "ultrafeedback", 2),
    (h4_ultrafeedback(), "ultrafeedback", 2),
    (rlhflow_ultrafeedback(), "ultrafeedback", 3),
    (rewardbench2_rows(), "rewardbench2", 14),
    (mmlu_pro_rows(), "mmlu-pro", 3),
])
def test_good_fixtures_exit_zero(tmp_path, capsys, rows, fmt, pairs):
    code, report = _run_json(capsys, write(tmp_path / "good.jsonl", rows), fmt)
    assert code == 0
    assert report == {"rows": len(rows), "pairs": pairs, "problems": []}


def test_broken_ultrafeedback_lists_every_problem(tmp_path, capsys):
    rows = flat_ultrafeedback() + flat_ultrafeedback()
    rows[0]["chosen"] = ["not", "a", "string"]
    rows[2]["rejected"] = rows[2]["chosen"]
    del rows[3]["prompt"]
    path = write(tmp_path / "uf.jsonl", rows)
    with open(path, "a") as handle:
        handle.write("{not json\n")
    code, report = _run_json(capsys, path, "ultrafeedback")
    assert code == 1
    assert set(report) == {"rows", "pairs", "problems"}
    assert report["rows"] == 5 and report["pairs"] == 1
    assert [(p["row"], p["field"]) for p in report["problems"]] == [
        (1, "chosen"), (3, "rejected"), (4, "prompt"), (5, "<json>")]
    assert all(set(p) == {"row", "field", "message"} for p in report["problems"])
    assert report["problems"][2]["message"] == "missing"


def test_broken_rewardbench2_and_mmlu(tmp_path, capsys):
    rb2 = rewardbench2_rows()
    rb2[3]["chosen"] = ["Red."]  # tied row now disagrees with num_correct = 3
    code, report = _run_json(capsys, write(tmp_path / "rb2.json", rb2), "rewardbench2")
    assert code == 1
    assert report["problems"] == [
        {"row": 4, "field": "num_correct", "message": "is 3 but the lists give 1"},
        {"row": 4, "field": "total_completions", "message": "is 5 but the lists give 3"}]
    mmlu = mmlu_pro_rows()
    mmlu[2]["options"] = mmlu[2]["options"] + ["Sun"]  # 11 options
    code, report = _run_json(capsys, write(tmp_path / "m.parquet", mmlu), "mmlu-pro")
    assert code == 1 and report["pairs"] == 2
    assert report["problems"][0]["row"] == 3 and report["problems"][0]["field"] == "options"


def test_text_output_and_unreadable_file(tmp_path, capsys):
    rows = mmlu_pro_rows()
    rows[1]["answer"] = "B"
    code = main(["data", "check", str(write(tmp_path / "m.json", rows)), "--format", "mmlu-pro"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[1:5] == ["format: mmlu-pro", "rows: 3", "pairs: 2", "problems: 1"]
    assert out[5] == "  row 2, field 'answer_index': 0 disagrees with answer 'B'"
    assert out[-1] == "status: UNUSABLE ROWS FOUND"
    (tmp_path / "bad.json").write_text('{"a": 1, "b": 2}')
    code, report = _run_json(capsys, tmp_path / "bad.json", "mmlu-pro")
    assert code == 1 and report["problems"][0]["row"] == 0
    assert main(["data", "check", str(tmp_path / "missing.json"), "--format", "mmlu-pro"]) == 2


@pytest.mark.parametrize("relative, fmt, rows, pairs, problems", [
    ("mmlu_pro/validation.json", "mmlu-pro", 70, 70, 0),
    ("mmlu_pro/test.json", "mmlu-pro", 12032, 12032, 0),
    ("ultrafeedback/train_1k.jsonl", "ultrafeedback", 1000, 994, 6),
])
def test_real_rows(capsys, relative, fmt, rows, pairs, problems):
    path = REAL_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} absent")
    code, report = _run_json(capsys, path, fmt)
    assert (report["rows"], report["pairs"], len(report["problems"])) == (rows, pairs, problems)
    assert code == (1 if problems else 0)
