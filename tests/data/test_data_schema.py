"""Reading raw rows (row numbers as an editor shows them) and collecting problems per row."""

from __future__ import annotations

import json
import warnings

import pytest

from auxdpo.data.schema import (
    DataFormatError,
    Problem,
    default_source,
    load_normalized,
    local_data_path,
    normalize_records,
    raise_on_schema_problems,
    read_records,
    require_list,
    require_text,
    split_conversation,
    to_dataset,
)
from data_fixtures import write


def test_jsonl_rows_are_numbered_by_line_and_bad_lines_become_problems(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{oops\n{"a": "\xff"}\n  \n[1, 2]\n')
    records, problems = read_records(path)
    assert records == [(1, {"a": 1}), (6, [1, 2])]
    assert [(p.row, p.field) for p in problems] == [(3, "<json>"), (4, "<utf-8>")]
    assert problems[0].message.startswith("not valid JSON: Expecting property name")
    assert problems[1].message == "not valid UTF-8 (byte 8 of the line)"


def test_json_lists_wrappers_and_parquet(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    assert read_records(write(tmp_path / "r.json", rows)) == ([(1, rows[0]), (2, rows[1])], [])
    (tmp_path / "w.json").write_text(json.dumps({"train": rows}))
    assert read_records(tmp_path / "w.json")[0] == [(1, rows[0]), (2, rows[1])]
    assert read_records(write(tmp_path / "r.parquet", rows))[0] == [(1, rows[0]), (2, rows[1])]


@pytest.mark.parametrize("name, content, message", [
    ("d.json", '{"a": 1, "b": 2}', "d.json: a .json file must hold a list of rows"),
    ("u.json", b'[\n\n{"a": "\xff"}]', "u.json: line 3 is not valid UTF-8"),
    ("n.json", "[1,", "n.json: not valid JSON (Expecting value: line 1 column 4 (char 3))"),
    ("r.csv", "a,b\n", "r.csv: unknown extension (expected .json, .jsonl or .parquet)"),
])
def test_unreadable_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(DataFormatError) as exc:
        read_records(path)
    assert str(exc.value) == f"{tmp_path}/{message}"
    with pytest.raises(FileNotFoundError, match="missing.json: no such file"):
        read_records(tmp_path / "missing.json")


def test_field_checks_record_schema_and_content_problems():
    found = []
    record = {"t": "ok", "blank": "  ", "n": 3, "none": None, "l": (1, 2), "empty": []}
    assert require_text(7, record, "t", found) == "ok"
    assert require_list(7, record, "l", found) == [1, 2]
    for field in ("blank", "n", "none", "gone"):
        assert require_text(7, record, field, found) is None
    for field in ("empty", "t"):
        assert require_list(7, record, field, found) is None
    assert [(str(p), p.kind) for p in found] == [
        ("row 7, field 'blank': empty string", "content"),
        ("row 7, field 'n': expected a string, got int", "schema"),
        ("row 7, field 'none': missing", "schema"),
        ("row 7, field 'gone': missing", "schema"),
        ("row 7, field 'empty': empty list", "content"),
        ("row 7, field 't': expected a list, got str", "schema")]
    assert found[0].as_dict() == {"row": 7, "field": "blank", "message": "empty string"}


@pytest.mark.parametrize("messages, result, message", [
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
      {"role": "assistant", "content": "Hi."}], ("Hi?", "Hi."), None),
    ([{"role": "user", "content": "Hi?"}], None, "last message is not from the assistant"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}], None,
     "expected one user turn before the reply, found 3 turns (multi-turn unsupported)"),
    ([{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}], None,
     "every message needs string 'role' and 'content'"),
    ([], None, "expected a non-empty list of {role, content} messages"),
])
def test_split_conversation(messages, result, message):
    found = []
    assert split_conversation(4, "chosen", messages, found) == result
    assert [p.message for p in found] == ([] if message is None else [message])


def test_schema_problems_raise_naming_the_first_five_content_problems_do_not():
    raise_on_schema_problems("f.jsonl", [Problem(1, "x", "empty string", "content")])
    problems = [Problem(row, "prompt", "missing") for row in range(1, 8)]
    with pytest.raises(DataFormatError) as exc:
        raise_on_schema_problems("f.jsonl", problems)
    assert str(exc.value) == ("f.jsonl: " + "; ".join(f"row {r}, field 'prompt': missing"
                                                      for r in range(1, 6)) + " (and 2 more)")


def normalize_text(records):
    def row(number, record, found):
        text = require_text(number, record, "text", found)
        return None if text is None else {"text": text, "row": number}
    return normalize_records(records, row)


def test_normalize_and_load_drop_rows_with_problems_with_a_warning(tmp_path):
    items, problems = normalize_text([(1, {"text": "a"}), (2, "b"), (3, {"text": " "})])
    assert items == [{"text": "a", "row": 1}]
    assert [str(p) for p in problems] == ["row 2, field '<row>': expected an object, got str",
                                          "row 3, field 'text': empty string"]
    path = write(tmp_path / "t.jsonl", [{"text": "a"}, {"text": ""}, {"text": "c"}])
    with pytest.warns(UserWarning, match=r"t.jsonl: dropped 1 unusable rows \(first: row 2, "):
        data = load_normalized(path, "train", normalize_text, ("text",), "texts")
    assert data["text"] == ["a", "c"]
    empty = write(tmp_path / "e.jsonl", [{"text": ""}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="e.jsonl: no usable texts"):
            load_normalized(empty, "train", normalize_text, ("text",), "texts")


def test_local_copies_under_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("AUXDPO_DATA_DIR", str(tmp_path))
    assert local_data_path("mmlu_pro/test.json") == f"{tmp_path}/mmlu_pro/test.json"
    assert default_source("mmlu_pro/test.json", "TIGER-Lab/MMLU-Pro") == \
        f"{tmp_path}/mmlu_pro/test.json"
    monkeypatch.delenv("AUXDPO_DATA_DIR")
    assert local_data_path("x.json") == "$AUXDPO_DATA_DIR/x.json"
    assert default_source("x.json", "org/set") == "org/set"
    assert to_dataset([], ("id", "text")).column_names == ["id", "text"]
