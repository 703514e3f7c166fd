"""`auxdpo data check` on good and broken fixtures, and on the real rows when present."""

import json

import pytest

from auxdpo.cli import main
from data_fixtures import (
    MULTI_FIXTURES,
    REAL_DATA,
    fixture_rows,
    flat_ultrafeedback,
    h4_ultrafeedback,
    mmlu_pro_rows,
    rewardbench2_rows,
    rlhflow_ultrafeedback,
    write,
)


def _report(capsys):
    """The --json report without its verdict, which must match its own pairs per response."""
    report = json.loads(capsys.readouterr().out)
    verdict = report.pop("verdict")
    if report["pairs"]:
        assert verdict.startswith(f"{report['pairs_per_response']:.2f} pairs per response: ")
    return report


def _run_json(capsys, path, fmt):
    code = main(["data", "check", str(path), "--format", fmt, "--json"])
    return code, _report(capsys)


def _sharing(prompts, responses, appearances, shared):
    """The statistics keys of the report, from counts: ``appearances`` = Σ pairs per response,
    ``shared`` = responses in >= 2 pairs."""
    return {"prompts": prompts, "responses": responses,
            "responses_per_prompt": responses / prompts,
            "pairs_per_response": appearances / responses,
            "share_in_2_or_more": shared / responses}


@pytest.mark.parametrize("rows, fmt, pairs, sharing", [
    (flat_ultrafeedback(), "ultrafeedback", 2, _sharing(2, 4, 4, 0)),
    (h4_ultrafeedback(), "ultrafeedback", 2, _sharing(2, 4, 4, 0)),
    # two pairs share the prompt "Capital of France?" but no response
    (rlhflow_ultrafeedback(), "ultrafeedback", 3, _sharing(2, 6, 6, 0)),
    # each chosen answer meets every rejected one: "Red." is in 2 + 2 pairs (ref and tied
    # rows share the prompt), "Green." and "Pink." in 1 + 3
    (rewardbench2_rows(), "rewardbench2", 14, _sharing(3, 13, 28, 7)),
    (mmlu_pro_rows(), "mmlu-pro", 3, _sharing(3, 6, 6, 0)),
])
def test_good_fixtures_exit_zero(tmp_path, capsys, rows, fmt, pairs, sharing):
    code, report = _run_json(capsys, write(tmp_path / "good.jsonl", rows), fmt)
    assert code == 0
    assert report == {"rows": len(rows), "pairs": pairs, **sharing, "problems": []}


@pytest.mark.parametrize("fmt, ties, rows, pairs, sharing", [
    # prompt 1: 4 responses, each in 3 pairs; prompt 2: the tie row is dropped, so the two
    # tied answers are in 1 pair each and the loser in 2
    ("rlhflow-ultrafeedback", "drop", 9, 8, _sharing(2, 7, 16, 5)),
    ("rlhflow-ultrafeedback", "half", 9, 9, _sharing(2, 7, 18, 7)),
    # 4 completions a prompt, one tie each: pairs per response (3, 2, 2, 3) twice
    ("openbmb-ultrafeedback", "drop", 2, 10, _sharing(2, 8, 20, 8)),
    ("openbmb-ultrafeedback", "half", 2, 12, _sharing(2, 8, 24, 8)),
    ("scored-responses", "drop", 2, 8, _sharing(2, 7, 16, 7)),
])
def test_multi_comparison_fixtures(capsys, fmt, ties, rows, pairs, sharing):
    code = main(["data", "check", str(MULTI_FIXTURES[fmt]), "--format", fmt, "--ties", ties,
                 "--json"])
    report = _report(capsys)
    assert code == 0
    assert report == {"rows": rows, "pairs": pairs, **sharing, "problems": []}


def test_multi_comparison_problems_and_text_output(tmp_path, capsys):
    rows = [{"prompt": "p", "responses": ["a", "b", "a"], "scores": [2, 1, 5]},
            {"prompt": "q", "responses": ["x", "y"], "scores": [1, "2"]},
            {"prompt": "r", "responses": ["u", "v"], "scores": [4, 4]}]
    path = write(tmp_path / "s.jsonl", rows)
    code = main(["data", "check", str(path), "--format", "scored-responses"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[1:] == [
        "format: scored-responses", "rows: 3", "pairs: 1", "prompts: 1",
        "responses: 2 (2.00 per prompt)",
        "pairs per response: mean 1.00; in >= 2 pairs: 0.0% of responses", "problems: 3",
        "  row 1, field 'responses[2]': same text as responses[0] (kept once)",
        "  row 2, field 'scores[1]': expected a finite number, got '2'",
        "  row 3, field '<row>': no pair: every score ties (ties='drop')",
        "loading: auxdpo train with dataset_format: scored-responses drops the 2 row(s) with "
        "content problems (or their responses), with a warning and stops at the 1 row(s) with "
        "schema problems",
        "status: UNUSABLE ROWS FOUND",
        "verdict: 1.00 pairs per response: AuxDPO's offsets cannot act in one epoch (each "
        "response is in one pair); use DPO or multi-comparison data (several rated responses "
        "per prompt, every pair); see README.md, \"When AuxDPO helps, and when it does not\""]
    with pytest.raises(SystemExit) as info:  # argparse: bad choice
        main(["data", "check", str(path), "--format", "scored-responses", "--ties", "keep"])
    assert info.value.code == 2


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
    assert set(report) == {"rows", "pairs", "prompts", "responses", "responses_per_prompt",
                           "pairs_per_response", "share_in_2_or_more", "problems"}  # + verdict
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
    assert out[1:9] == ["format: mmlu-pro", "rows: 3", "pairs: 2", "prompts: 2",
                        "responses: 4 (2.00 per prompt)",
                        "pairs per response: mean 1.00; in >= 2 pairs: 0.0% of responses",
                        "problems: 1",
                        "  row 2, field 'answer_index': 0 disagrees with answer 'B'"]
    assert out[-3:-1] == ["loading: auxdpo eval stops at the 1 row(s) with schema problems",
                          "status: UNUSABLE ROWS FOUND"]
    assert out[-1].startswith("verdict: 1.00 pairs per response: AuxDPO's offsets cannot act")
    (tmp_path / "bad.json").write_text('{"a": 1, "b": 2}')
    code, report = _run_json(capsys, tmp_path / "bad.json", "mmlu-pro")
    assert code == 1 and report["problems"][0]["row"] == 0
    assert main(["data", "check", str(tmp_path / "missing.json"), "--format", "mmlu-pro"]) == 2


@pytest.mark.parametrize("relative, fmt, rows, pairs, problems, responses", [
    ("mmlu_pro/validation.json", "mmlu-pro", 70, 70, 0, 140),
    ("mmlu_pro/test.json", "mmlu-pro", 12032, 12032, 0, None),
    ("ultrafeedback/train_1k.jsonl", "ultrafeedback", 1000, 994, 6, 1988),
])
def test_real_rows(capsys, relative, fmt, rows, pairs, problems, responses):
    path = REAL_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} absent")
    code, report = _run_json(capsys, path, fmt)
    assert (report["rows"], report["pairs"], len(report["problems"])) == (rows, pairs, problems)
    assert code == (1 if problems else 0)
    if responses is not None:  # one pair per prompt, no response shared
        assert (report["responses"], report["pairs_per_response"],
                report["share_in_2_or_more"]) == (responses, 1.0, 0.0)


def test_a_hub_name_is_checked_as_training_loads_it(monkeypatch, capsys):
    """`auxdpo data check RLHFlow/...` (the walkthrough's command) reads the hub set through
    datasets.load_dataset, as `dataset_name` of `auxdpo train` does (loader stubbed: no hub)."""
    import datasets

    calls = []

    def load_dataset(name, *args, split=None, **kwargs):
        calls.append((name, args, split))
        return fixture_rows("rlhflow-ultrafeedback")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    name = "RLHFlow/UltraFeedback-preference-standard"
    assert main(["data", "check", name, "--format", "rlhflow-ultrafeedback"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert calls == [(name, (), "train")]
    assert out[0] == f"hub data set: {name}[train]" and "pairs: 8" in out
    assert out[-1].startswith("verdict: 2.29 pairs per response: AuxDPO stays close to DPO")
    assert main(["data", "check", "HuggingFaceH4/ultrafeedback_binarized", "--format",
                 "ultrafeedback", "--config", "default", "--json"]) == 0
    assert calls[-1] == ("HuggingFaceH4/ultrafeedback_binarized", ("default",), "train_prefs")
