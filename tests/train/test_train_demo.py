"""The demo's rows: a short UltraFeedback sample when present, else synthetic comparisons.

The demo's run itself (a few steps, its files) is tested in test_train_cli.py.
"""

from __future__ import annotations

import itertools
import json
import re

from auxdpo.train.demo import DEFAULT_ULTRAFEEDBACK, demo_rows

ROW = re.compile(r"^What is (\d+)\+(\d+)\? $")


def test_synthetic_rows_compare_the_four_answers_of_a_sum_closer_first():
    rows, source = demo_rows(24, path=None)
    assert source == "synthetic" and len(rows) == 24
    groups = [list(g) for _, g in itertools.groupby(rows, key=lambda row: row["prompt"])]
    for number, group in enumerate(groups):
        a, b = map(int, ROW.match(group[0]["prompt"]).groups())
        assert 1 <= a <= 50 and 1 <= b <= 50
        error = {row[k]: abs(int(row[k].rstrip(".")) - (a + b))
                 for row in group for k in ("chosen", "rejected")}
        assert len(error) == 4 and sorted(error.values())[0] == 0  # the sum and 3 wrong ones
        assert all(error[row["chosen"]] < error[row["rejected"]] for row in group)
        # every pair of the four except equally far ones (-1 and +1): at most 6
        expected = sum(e != f for e, f in itertools.combinations(error.values(), 2))
        if number < len(groups) - 1:  # the last group may be cut at n rows
            assert len(group) == expected
        assert sorted((r["chosen"], r["rejected"]) for r in group) == sorted(set(
            (r["chosen"], r["rejected"]) for r in group))  # no pair twice
    assert demo_rows(24, path=None) == (rows, source)  # seeded


def test_ultrafeedback_rows_are_cut_and_unusable_ones_skipped(tmp_path):
    path = tmp_path / "uf.jsonl"
    rows = [{"prompt": "p" * 50, "chosen": "c" * 45, "rejected": "r", "extra": 1},
            {"prompt": "same", "chosen": "x" * 40 + "1", "rejected": "x" * 40 + "2"},  # cut equal
            {"prompt": "blank", "chosen": "   ", "rejected": "r"},
            {"prompt": 7, "chosen": "yes", "rejected": "no"},
            {"prompt": "late", "chosen": "a", "rejected": "b"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    got, source = demo_rows(4, path=path)
    assert source == "ultrafeedback"
    assert got == [{"prompt": "p" * 40, "chosen": "c" * 40, "rejected": "r"},
                   {"prompt": "7", "chosen": "yes", "rejected": "no"}]
    assert demo_rows(2, path=path, chars=3)[0] == [{"prompt": "ppp", "chosen": "ccc",
                                                    "rejected": "r"}]


def test_too_few_usable_rows_or_no_file_falls_back_to_synthetic(tmp_path):
    path = tmp_path / "uf.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    assert demo_rows(4, path=path)[1] == "synthetic"  # 1 usable row, 2 wanted
    assert demo_rows(4, path=tmp_path / "missing.jsonl")[1] == "synthetic"


def test_the_default_path_is_read_from_the_data_folder(tmp_path, monkeypatch):
    sample = tmp_path / DEFAULT_ULTRAFEEDBACK
    sample.parent.mkdir(parents=True)
    sample.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"})
                              + "\n" for i in range(5)))
    monkeypatch.setenv("AUXDPO_DATA_DIR", str(tmp_path))
    rows, source = demo_rows(6)
    assert source == "ultrafeedback" and [row["prompt"] for row in rows] == ["q0", "q1", "q2"]
    monkeypatch.setenv("AUXDPO_DATA_DIR", str(tmp_path / "empty"))
    assert demo_rows(6)[1] == "synthetic"
