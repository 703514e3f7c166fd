"""Bad input of every command: one line ``auxdpo <command>: error: <what, where>``, exit 2."""

from __future__ import annotations

import json
import os

import pytest

from auxdpo.cli import main

ROWS = [{"prompt": f"q{i}? ", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(4)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_line_error(capsys, command: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith(f"auxdpo {command}: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0].removeprefix(f"auxdpo {command}: error: ")


def _train(tmp_path, data, *extra):
    return ["train", "--model_name_or_path", "tiny-gpt2", "--dataset_name", str(data),
            "--output_dir", str(tmp_path / "run"), "--use_cpu", "--bf16", "false",
            "--report_to", "[]", *extra]


def _mixed(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2] = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
               "rejected": [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": "b"}]}
    return _jsonl(tmp_path / "mixed.jsonl", rows)


def _bad_utf8(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", ROWS)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"yes", b"y\xffs")
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("make_data, extra, message", [
    (_mixed, [], r"mixed\.jsonl: row 3, field 'chosen': a message list, but row 1 field "
                 r"'prompt' is plain text; a data set is all plain text or all conversations"),
    (_bad_utf8, [], r"bad\.jsonl: line 3 is not valid UTF-8"),
    (None, ["--max_steps", "ten"], r"^max_steps: expected an integer, got 'ten'$"),
    (None, ["--learning_rate", "[0.1]"], r"^learning_rate: expected a number, got \[0\.1\]$"),
    (None, ["--beta", ".nan"], r"^beta: NaN is not a valid value$"),
    (None, ["--beta", "nan"], r"^beta: expected a number, got 'nan'$"),
    (None, ["--beta", "-1"], r"beta must be a finite number > 0, got -1"),
    (lambda tmp_path: _jsonl(tmp_path / "empty.jsonl", []), [], r"empty\.jsonl: no rows$"),
], ids=["mixed-rows", "invalid-utf8", "max-steps-text", "lr-list", "beta-nan", "beta-nan-text", "beta-negative",
        "empty-file"])
def test_train_bad_values(tmp_path, capsys, make_data, extra, message):
    data = make_data(tmp_path) if make_data else _jsonl(tmp_path / "ok.jsonl", ROWS)
    assert main(_train(tmp_path, data, *extra)) == 2
    assert __import__("re").search(message, _one_line_error(capsys, "train"))


@pytest.mark.parametrize("text, message", [
    ("method: dpo\nbeta: [0.1\n", r"run\.yaml: invalid YAML at line 3, column 1"),
    ("method: !!python/object/apply:os.system ['echo no']\n",
     r"run\.yaml: invalid YAML at line 1, column 9: could not determine a constructor"),
])
def test_train_yaml_errors_name_file_and_line(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert main(["train", "--config", str(config)]) == 2
    assert __import__("re").search(message, _one_line_error(capsys, "train"))


def test_train_output_dir_that_is_a_file(tmp_path, capsys):
    data = _jsonl(tmp_path / "ok.jsonl", ROWS)
    (tmp_path / "run").write_text("x")
    assert main(_train(tmp_path, data)) == 2
    assert _one_line_error(capsys, "train") == f"output folder {tmp_path / 'run'} is a file, " \
                                               "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_output_dir_not_writable(tmp_path, capsys):
    data = _jsonl(tmp_path / "ok.jsonl", ROWS)
    (tmp_path / "run").mkdir(mode=0o500)
    assert main(_train(tmp_path, data)) == 2
    assert _one_line_error(capsys, "train").endswith("is not writable")


@pytest.mark.parametrize("extra, message", [
    (["--max-length", "0"], "argument --max-length: expected a positive integer, got 0"),
    (["--max-length", "-3"], "argument --max-length: expected a positive integer, got -3"),
    (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
    (["--beta", "nan"], "argument --beta: expected a finite number > 0, got nan"),
])
def test_eval_bad_arguments(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", "tiny-gpt2", "--base-model", "tiny-gpt2", "--data", "x.jsonl",
              "--format", "ultrafeedback", *extra])
    assert exit_info.value.code == 2
    assert _one_line_error(capsys, "eval") == message


def test_eval_json_to_a_folder(tmp_path, capsys):
    assert main(["eval", "--model", "tiny-gpt2", "--base-model", "tiny-gpt2", "--data",
                 str(_jsonl(tmp_path / "ok.jsonl", ROWS)), "--format", "ultrafeedback",
                 "--json", str(tmp_path)]) == 2
    assert _one_line_error(capsys, "eval") == f"--json {tmp_path} is a folder; name a file"


def test_default_max_lengths_are_clamped_to_a_tiny_runs_positions(tmp_path, capsys, caplog):
    """A tiny run has 256 positions; train's default 1024 and eval's 2048 exceed it, and a
    400-character row used to raise an IndexError in eval."""
    rows = [dict(r) for r in ROWS]
    rows[1]["chosen"] = "long " * 80
    data = _jsonl(tmp_path / "long.jsonl", rows)
    with caplog.at_level("WARNING", logger="auxdpo.lengths"):
        assert main(_train(tmp_path, data, "--max_steps", "1", "--disable_tqdm", "true")) == 0
        assert "train: max_length=1024 exceeds the model's 256 positions; using " \
            "max_length=256" in caplog.text
        assert main(["eval", "--model", str(tmp_path / "run"), "--data", str(data),
                     "--format", "ultrafeedback"]) == 0
    assert "eval: max_length=2048 exceeds the model's 256 positions; using max_length=256" in \
        caplog.text
    assert "Pairwise accuracy (4 pairs)" in capsys.readouterr().out


def test_protocol_out_a_file_and_report_on_other_folders(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["protocol", "run", "--recipe", "examples/protocol/qwen3-0.6b.yaml", "--out",
                 str(tmp_path / "f")]) == 2
    assert _one_line_error(capsys, "protocol") == f"--out {tmp_path / 'f'} is a file, not a " \
                                                  "folder"
    assert main(["protocol", "report", "--out", str(tmp_path)]) == 2
    assert "not found (is" in _one_line_error(capsys, "protocol")
    (tmp_path / "recipe.json").write_text(json.dumps({"cells": []}))
    assert main(["protocol", "report", "--out", str(tmp_path)]) == 2
    assert "holds no protocol recipe" in _one_line_error(capsys, "protocol")


def test_oracle_out_a_file_and_nan_beta(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["oracle", "--preset", "quick", "--out", str(tmp_path / "f")]) == 2
    assert _one_line_error(capsys, "oracle").endswith("is a file, not a folder")
    assert main(["oracle-grid", "--out", str(tmp_path / "f")]) == 2
    assert _one_line_error(capsys, "oracle-grid").endswith("is a file, not a folder")
    with pytest.raises(SystemExit):
        main(["oracle", "--beta", "nan", "--out", str(tmp_path / "o")])
    assert "argument --beta: expected a finite number > 0, got nan" in \
        _one_line_error(capsys, "oracle")


def test_corrupt_encode_cache_is_named(tmp_path):
    from auxdpo.harness.oracle.mmlu import MmluTaskConfig, _encoded

    cache = tmp_path / "cache.pt"
    cache.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match=rf"encode cache {cache} is unreadable .*; delete it"):
        _encoded(MmluTaskConfig(cache=str(cache)), [])


def test_data_check_empty_file_and_invalid_utf8(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["data", "check", str(tmp_path / "empty.jsonl"), "--format",
                 "ultrafeedback"]) == 1
    assert "row 0, field '<file>': no rows" in capsys.readouterr().out
    assert main(["data", "check", str(_bad_utf8(tmp_path)), "--format", "ultrafeedback"]) == 1
    assert "row 3, field '<utf-8>': not valid UTF-8" in capsys.readouterr().out


UF_REAL = "/work/shared/data/ultrafeedback/train_1k.jsonl"


@pytest.mark.skipif(not os.path.exists(UF_REAL), reason="real UltraFeedback rows absent")
def test_train_and_data_check_name_the_same_row_of_the_real_file(tmp_path, capsys):
    """Line 307 of train_1k.jsonl has chosen == rejected: both commands say row 307, and
    both say how many such rows there are and that dataset_format: ultrafeedback drops them."""
    main(["data", "check", UF_REAL, "--format", "ultrafeedback"])
    out = capsys.readouterr().out
    assert "row 307, field 'rejected': identical to chosen" in out
    assert ("loading: auxdpo train with dataset_format: ultrafeedback drops the 6 row(s) with "
            "content problems") in out  # 4 identical pairs, 2 empty responses
    assert main(_train(tmp_path, UF_REAL)) == 2
    error = _one_line_error(capsys, "train")
    assert error.startswith(f"{UF_REAL}: row 307: chosen and rejected are identical (4 of 1000 "
                            "rows are: 307, 656, 911, 998); drop such rows, or with auxdpo "
                            "train read the file with dataset_format: ultrafeedback, which "
                            "drops them with a warning")


def test_train_outputs_honour_the_umask(tmp_path):
    data = _jsonl(tmp_path / "ok.jsonl", ROWS)
    old = os.umask(0o027)
    try:
        assert main(_train(tmp_path, data, "--max_steps", "1", "--max_length", "64",
                           "--disable_tqdm", "true", "--method", "auxdpo")) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files
    assert [str(p.relative_to(tmp_path)) for p in files if p.stat().st_mode & 0o777 != 0o640] == []
