"""The JSONL metrics file: one valid JSON line per logging event, no step twice on resume."""

from __future__ import annotations

import json
import math

from transformers import TrainerControl, TrainerState, TrainingArguments

from auxdpo.train.callbacks import JsonlMetricsCallback


def state(step, epoch=None, main=True):
    return TrainerState(global_step=step, epoch=epoch, is_world_process_zero=main)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def log(callback, step, logs, **kw):
    control = TrainerControl()
    assert callback.on_log(None, state(step, **kw), control, logs=logs) is control


def test_each_event_is_one_line_with_step_epoch_and_nulls_for_non_finite(tmp_path):
    path = tmp_path / "deep" / "run" / "metrics.jsonl"  # folders made on the first line
    callback = JsonlMetricsCallback(str(path))
    log(callback, 1, {"loss": 0.75, "grad_norm": math.inf, "aux/prior": math.nan,
                      "learning_rate": 1e-2, "note": "ok"}, epoch=0.25)
    log(callback, 2, {"loss": -math.inf, "count": 3}, epoch=0.5)
    log(callback, 3, {})  # nothing logged: no line
    log(callback, 4, None)
    assert lines(path) == [
        {"step": 1, "epoch": 0.25, "loss": 0.75, "grad_norm": None, "aux/prior": None,
         "learning_rate": 1e-2, "note": "ok"},
        {"step": 2, "epoch": 0.5, "loss": None, "count": 3}]


def test_only_the_main_process_writes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    callback = JsonlMetricsCallback(path)
    log(callback, 1, {"loss": 1.0}, main=False)
    assert not path.exists()
    path.write_text('{"step": 5}\n')
    callback.on_train_begin(None, state(0, main=False), TrainerControl())
    assert path.read_text() == '{"step": 5}\n'  # other processes leave the file alone


def test_a_fresh_run_starts_an_empty_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    callback = JsonlMetricsCallback(path)
    callback.on_train_begin(None, state(0), TrainerControl())
    assert not path.exists()  # nothing to clear: no file made
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n')
    callback.on_train_begin(None, state(0), TrainerControl())
    assert path.read_text() == ""


def test_resume_keeps_the_lines_of_steps_done_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([
        '{"step": 1, "loss": 3.0}', '{"step": 2, "loss": 2.0}', '[1, 2]', '{"step": "3"}',
        '{"step": 3, "loss": 1.5}', '{"step": 4, "loss": 1.0}', '{"step": 5, "lo']) + "\n")
    callback = JsonlMetricsCallback(path)
    callback.on_train_begin(TrainingArguments(output_dir=str(tmp_path), report_to=[],
                                              use_cpu=True), state(3), TrainerControl())
    assert lines(path) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0},
                           {"step": 3, "loss": 1.5}]
    log(callback, 4, {"loss": 0.5})
    assert [line["step"] for line in lines(path)] == [1, 2, 3, 4]
