"""`auxdpo train`'s output folder: a used one is refused (no silent overwrite), an overwrite
removes the earlier run's files and only those, a failed start leaves no folder behind."""

from __future__ import annotations

import json
import os

import pytest
import train_helpers as H

from auxdpo.cli import main
from auxdpo.locks import LOCK_NAME
from auxdpo.train.run_folder import check_run_folder, failed_start_cleanup, run_files


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _train(data, out, *extra):
    return ["train", "--model_name_or_path", "tiny-gpt2", "--tiny_hidden_size", "16",
            "--dataset_name", str(data), "--output_dir", str(out), "--use_cpu", "--bf16",
            "false", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--report_to", "[]", "--save_strategy", "steps", "--save_steps", "2",
            "--disable_tqdm", "true", "--max_length", "64", *extra]


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_second_run_into_a_used_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    data = _write(tmp_path / "prefs.jsonl", H.rows(8))
    out = tmp_path / "run"
    assert main(_train(data, out)) == 0
    before = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)}
    capsys.readouterr()
    assert main(_train(data, out, "--method", "dpo")) == 2
    assert _error(capsys) == (
        f"auxdpo train: error: output_dir {out} holds an earlier run (README.md, "
        "aux_coverage.json, aux_deltas.safetensors, aux_offsets.json, ... (15 entries)): "
        "resume it with resume_from_checkpoint: true, or replace it with "
        "overwrite_output_dir: true (removes the files auxdpo train writes; others stay), or "
        "pick another output_dir")
    assert {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)} == before


def test_overwrite_removes_the_earlier_runs_files_and_keeps_yours(tmp_path, capsys):
    """A dpo run over an auxdpo run's folder: no offsets of the earlier run stay beside the
    new model; a file of the user's stays."""
    data = _write(tmp_path / "prefs.jsonl", H.rows(8))
    out = tmp_path / "run"
    assert main(_train(data, out, "--method", "auxdpo", "--max_steps", "4")) == 0
    assert (out / "aux_offsets.json").is_file() and (out / "checkpoint-4").is_dir()
    (out / "my_notes.txt").write_text("keep me")
    assert main(_train(data, out, "--method", "dpo", "--overwrite_output_dir", "true")) == 0
    names = set(os.listdir(out))
    assert not {n for n in names if n.startswith("aux_")}, names   # auxdpo's files are gone
    assert "checkpoint-4" not in names and "checkpoint-2" in names  # the new run's only
    assert (out / "my_notes.txt").read_text() == "keep me"
    config = (out / "auxdpo_config.yaml").read_text()
    assert "method: dpo" in config and "overwrite_output_dir: true" in config
    assert run_files(out) == sorted(names - {"my_notes.txt"})


def test_resume_and_overwrite_together_are_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="overwrite_output_dir: true and resume_from_checkpoint "
                                         "both set; .*: set one"):
        check_run_folder(str(tmp_path), resume=True, overwrite=True)
    check_run_folder(str(tmp_path), resume="true", overwrite=False)   # a resume: allowed
    check_run_folder(str(tmp_path), resume=None, overwrite=True)      # an overwrite: allowed
    with pytest.raises(ValueError, match=r"is not empty \(notes.txt\)"):
        empty = tmp_path / "other"
        empty.mkdir()
        (empty / "notes.txt").write_text("x")
        check_run_folder(str(empty), resume="false", overwrite=False)
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / LOCK_NAME).write_text("{}")  # an unreadable lock: not a run
    check_run_folder(str(tmp_path / "fresh"), resume=None, overwrite=False)


FAILED_STARTS = {
    # what goes wrong -> (extra arguments, data rows or None for a missing file, message)
    "missing-data-file": ([], None, "dataset file"),
    "bad-row": ([], "identical", "chosen and rejected are identical"),
    "bad-key-in-trainer": (["--capacity", "regex:no_such_parameter"], "ok", "regex"),
    "no-checkpoint-to-resume": (["--resume_from_checkpoint", "true"], "ok",
                                "no complete checkpoint"),
    "model-that-does-not-load": (["--model_name_or_path", "/nonexistent/model"], "ok",
                                 "/nonexistent/model"),
}


@pytest.mark.parametrize("case", list(FAILED_STARTS))
def test_a_failed_start_leaves_no_folder(tmp_path, capsys, case):
    extra, rows, message = FAILED_STARTS[case]
    data = tmp_path / "prefs.jsonl"
    if rows == "ok":
        _write(data, H.rows(8))
    elif rows == "identical":
        _write(data, [*H.rows(3), {"prompt": "p", "chosen": "same", "rejected": "same"}])
    out = tmp_path / "runs" / "nested" / "run"
    assert main(_train(data, out, *extra)) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "runs").exists()  # the folder and the parents it made are gone
    existing = tmp_path / "existing"          # a folder that was there (empty) stays, empty
    existing.mkdir()
    assert main(_train(data, existing, *extra)) == 2
    assert os.listdir(existing) == []


def test_cleanup_keeps_what_was_there_and_what_a_started_run_wrote(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "old.txt").write_text("x")
    with pytest.raises(RuntimeError), failed_start_cleanup(folder):
        (folder / "new.txt").write_text("y")
        raise RuntimeError("failed before the first step")
    assert os.listdir(folder) == ["old.txt"]

    class Started:
        class state:
            global_step = 3

    with pytest.raises(RuntimeError), failed_start_cleanup(folder) as progress:
        progress.trainer = Started()
        (folder / "metrics.jsonl").write_text("{}")
        raise RuntimeError("failed at step 3")
    assert sorted(os.listdir(folder)) == ["metrics.jsonl", "old.txt"]
