"""``report_to``: TensorBoard events hold the trainer's metrics (read back from the event file),
W&B writes an offline run, and a missing extra is one line naming the install command."""

from __future__ import annotations

import importlib.util

import pytest
import train_helpers as th

from auxdpo.cli import main
from auxdpo.train import reporting
from auxdpo.train.trainer import AuxDPOTrainer

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.mark.parametrize("integration", ["tensorboard", "wandb"])
def test_missing_extra_is_one_line_naming_the_install(integration, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reporting, "_available", lambda name: False)
    with pytest.raises(ValueError, match=rf"pip install 'auxdpo\[{integration}\]'"):
        th.config(tmp_path, report_to=[integration])
    code = main(["train", "--model_name_or_path", "tiny-gpt2", "--dataset_name", "x.jsonl",
                 "--output_dir", str(tmp_path / "run"), "--report_to", f"[{integration}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == (f"auxdpo train: error: report_to {integration} needs the {integration} "
                   f"package: pip install 'auxdpo[{integration}]' (or pip install {integration})")


def test_installed_or_unlisted_integrations_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(reporting, "_available", lambda name: True)
    assert th.config(tmp_path, report_to=["tensorboard", "wandb"]).report_to == \
        ["tensorboard", "wandb"]
    monkeypatch.setattr(reporting, "_available", lambda name: False)
    for value in ("none", "all", [], None):  # "all" = whatever is installed
        reporting.check_report_to(value)


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="needs the tensorboard extra")
def test_tensorboard_event_file_holds_the_logged_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "run" / "runs"  # transformers' default: output_dir/runs/<date_host>
    config = th.config(tmp_path / "run", report_to=["tensorboard"], max_steps=3)
    trainer = AuxDPOTrainer(th.model("gpt2"), args=config, train_dataset=th.dataset(8),
                            processing_class=th.tokenizer())
    trainer.train()
    trainer.callback_handler.on_train_end(config, trainer.state, trainer.control)  # flush
    events = sorted(logs.rglob("events.out.tfevents.*"))
    assert events, f"no event file under {logs}"
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    for tag, key in (("train/loss", "loss"), ("train/aux/null_residual", "aux/null_residual"),
                     ("train/rewards/margins", "rewards/margins")):
        scalars = accumulator.Scalars(tag)
        assert [s.step for s in scalars] == [e["step"] for e in logged]
        for scalar, entry in zip(scalars, logged):  # stored as float32
            assert scalar.value == pytest.approx(entry[key], rel=1e-6, abs=1e-12)


def _wandb_records(path):
    """The protobuf records of a W&B run file (``run-<id>.wandb``). wandb 0.31 ships no Python
    reader (its Go core writes the file), so this follows the format: a 7-byte header
    (``:W&B``, magic 0xBEE1, version 0), then LevelDB log blocks of 32 KiB whose chunks carry a
    7-byte header (crc32, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4) and together each
    serialised ``wandb_internal_pb2.Record``."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (length == 0 and kind == 0):          # a block's zero padding
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):                                    # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.skipif(not HAS_WANDB, reason="needs the wandb extra")
def test_wandb_offline_run_holds_the_logged_metrics(tmp_path, monkeypatch):
    import json

    import wandb

    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                       "WANDB_SILENT": "true", "WANDB_PROJECT": "auxdpo-test",
                       "WANDB_CONSOLE": "off", "WANDB_DISABLE_CODE": "true",
                       "WANDB_DISABLE_GIT": "true", "WANDB_X_DISABLE_STATS": "true",
                       "WANDB_X_DISABLE_MACHINE_INFO": "true",
                       "WANDB_X_SAVE_REQUIREMENTS": "false",
                       # nothing may go out: any request would hit a closed local port
                       "WANDB_BASE_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    config = th.config(tmp_path / "run", report_to=["wandb"], max_steps=3)
    trainer = AuxDPOTrainer(th.model("gpt2"), args=config, train_dataset=th.dataset(8),
                            processing_class=th.tokenizer())
    try:
        trainer.train()
    finally:
        wandb.finish()      # transformers leaves the run open; finish flushes the run file
        wandb.teardown()    # and stops the wandb-core service process
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item}
               for record in _wandb_records(runs[0]) if record.HasField("history")]
    history = [row for row in history if "train/loss" in row]
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert [row["train/global_step"] for row in history] == [e["step"] for e in logged] \
        == [1, 2, 3]
    for key in ("loss", "rewards/margins", "rewards/accuracies", "aux/null_residual",
                "aux/delta_norm", "aux/penalty"):
        assert [row[f"train/{key}"] for row in history] == [e[key] for e in logged], key
    assert logged[-1]["loss"] < logged[0]["loss"]
