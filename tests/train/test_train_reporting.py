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


@pytest.mark.skipif(not HAS_WANDB, reason="needs the wandb extra")
def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = th.config(tmp_path / "run", report_to=["wandb"], max_steps=2)
    trainer = AuxDPOTrainer(th.model("gpt2"), args=config, train_dataset=th.dataset(8),
                            processing_class=th.tokenizer())
    trainer.train()
    import wandb

    wandb.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))
