"""One run's config and data: splitting a flat config, and local rows named by their lines.

Also tested elsewhere: unknown keys and bad values through resolve_config (test_train_cli.py,
test_cli_errors.py), the run itself and its folder (test_train_cli.py, test_train_run_folder.py).
"""

from __future__ import annotations

import json

import pytest

from auxdpo.train.data import SOURCE_ROW
from auxdpo.train.run import RunArguments, config_key_names, load_dataset_rows, resolve_config


def rows(n):
    return [{"prompt": f"q{i}? ", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(n)]


def test_a_flat_config_is_split_between_run_arguments_and_the_trainer_config(tmp_path):
    values = {"model_name_or_path": "tiny-llama", "max_train_rows": 3, "beta": 0.25,
              "method": "ipo", "use_cpu": True, "bf16": False, "report_to": []}
    run_args, config = resolve_config(values)
    assert (run_args.model_name_or_path, run_args.max_train_rows) == ("tiny-llama", 3)
    assert (config.beta, config.method, config.output_dir) == (0.25, "ipo", "runs/train")
    names = config_key_names()
    assert {"model_name_or_path", "beta", "method", "aux_delta_scale"} <= names
    with pytest.raises(ValueError) as exc:
        resolve_config({"model_name_or_pth": "tiny-gpt2", "output_dir": str(tmp_path)})
    assert str(exc.value) == ("unknown config key(s): model_name_or_pth (did you mean "
                              "model_name_or_path?)")


def test_jsonl_rows_carry_their_line_numbers_blank_lines_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(r) for r in rows(4)]
    path.write_text(f"{lines[0]}\n\n{lines[1]}\n   \n{lines[2]}\n{lines[3]}\n")
    data = load_dataset_rows(RunArguments(dataset_name=str(path)))
    assert data[SOURCE_ROW] == [1, 3, 5, 6]
    assert data["chosen"] == ["yes 0", "yes 1", "yes 2", "yes 3"]
    first = load_dataset_rows(RunArguments(dataset_name=str(path), max_train_rows=2))
    assert first[SOURCE_ROW] == [1, 3]
    listed = tmp_path / "rows.json"
    listed.write_text(json.dumps(rows(3)))
    assert load_dataset_rows(RunArguments(dataset_name=str(listed)))[SOURCE_ROW] == [1, 2, 3]


@pytest.mark.parametrize("name, content, message", [
    ("a.jsonl", '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n',
     "a.jsonl: line 2 is not JSON (Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1))"),
    ("a.jsonl", '\n["p", "a", "b"]\n', "a.jsonl: line 2 is not a JSON object"),
    ("a.json", '{"prompt": "p"}', "a.json: expected a JSON list of row objects"),
    ("a.json", '[{"prompt": "p"}, 3]', "a.json: expected a JSON list of row objects"),
    ("a.json", '[\n{"prompt": "p",\n', "a.json: not JSON (Expecting property name enclosed in "
     "double quotes: line 3 column 1 (char 18))"),
    ("a.json", "[]", "a.json: no rows"),
    ("a.json", b'[\n{"prompt": "\xff"}]', "a.json: line 2 is not valid UTF-8"),
])
def test_unreadable_rows_are_named_by_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(ValueError) as exc:
        load_dataset_rows(RunArguments(dataset_name=str(path)))
    assert str(exc.value) == f"{tmp_path}/{message}"


def test_row_problems_name_the_file_and_its_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    data = rows(3)
    del data[2]["rejected"]
    path.write_text("\n" + "".join(json.dumps(r) + "\n" for r in data))
    with pytest.raises(ValueError) as exc:
        load_dataset_rows(RunArguments(dataset_name=str(path)))
    assert str(exc.value).startswith(f"{path}: row 4")
    assert "rejected" in str(exc.value)
