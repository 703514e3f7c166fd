"""``auxdpo train`` end to end on a tiny local model; config parsing; offset state files."""

from __future__ import annotations

import json

import pytest
import torch
import train_helpers as H
import yaml
from safetensors.torch import load_file

from auxdpo.cli import main
from auxdpo.train.checkpoint import load_state, save_state
from auxdpo.train.run import parse_overrides, resolve_config


def _write_data(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_train_command_writes_run_directory(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    _write_data(data, H.rows(8))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": "tiny-llama", "tiny_hidden_size": 16, "dataset_name": str(data),
        "output_dir": str(tmp_path / "run"), "method": "auxdpo", "max_steps": 2,
        "per_device_train_batch_size": 4, "report_to": [], "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "logging_steps": 1,
        "save_strategy": "no", "disable_tqdm": True, "max_length": 64}))
    code = main(["train", "--config", str(config), "--beta", "0.25", "--capacity",
                 "last-block", "--delta_lr=0.1"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    printed = out[[i for i, line in enumerate(out) if line.startswith("run: ")][-1]:]
    run = tmp_path / "run"
    assert printed[0] == f"run: {run}"
    assert printed[1] == "method: auxdpo  capacity: last-block  steps: 2"
    final = json.loads(printed[2].removeprefix("final: "))
    assert {"loss", "aux/delta_norm", "aux/null_residual", "aux/penalty"} <= set(final)
    resolved = yaml.safe_load((run / "auxdpo_config.yaml").read_text())
    assert resolved["training"]["beta"] == 0.25 and resolved["training"]["delta_lr"] == 0.1
    assert resolved["run"]["model_name_or_path"] == "tiny-llama"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]
    deltas = load_file(str(run / "aux_deltas.safetensors"))
    assert deltas["delta_chosen"].shape == (8,)
    assert (run / "model.safetensors").exists() and (run / "tokenizer.json").exists()


def test_train_command_reports_bad_rows(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    rows = H.rows(4)
    rows[3]["rejected"] = rows[3]["chosen"]
    _write_data(data, rows)
    code = main(["train", "--model_name_or_path", "tiny-gpt2", "--dataset_name", str(data),
                 "--output_dir", str(tmp_path / "run"), "--use_cpu", "--bf16", "false"])
    assert code == 2
    assert "prefs.jsonl: row 4: chosen and rejected are identical" in capsys.readouterr().err


def test_parse_overrides_reads_yaml_scalars():
    assert parse_overrides(["--beta", "0.2", "--bf16=false", "--use-cpu", "--report_to", "[]",
                            "--delta_cap", "null"]) == {
        "beta": 0.2, "bf16": False, "use_cpu": True, "report_to": [], "delta_cap": None}
    with pytest.raises(ValueError, match="expected --key value"):
        parse_overrides(["beta", "0.2"])


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown config key\\(s\\): betta"):
        resolve_config({"betta": 0.1, "output_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="method must be one of"):
        resolve_config({"method": "kto", "output_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="aux_constraint"):
        resolve_config({"aux_constraint": "local", "output_dir": str(tmp_path)})


def test_offset_state_round_trip_is_exact_and_pickle_free(tmp_path):
    state = {"mode": "global", "num_steps": 3, "cap": None, "raw": torch.randn(5, 2,
             dtype=torch.float64), "optimizer": {"step": torch.tensor([1, 0, 2]),
             "exp_avg": torch.randn(5, 2), "betas": [0.9, 0.999]}}
    paths = save_state(state, tmp_path)
    assert sorted(p.name for p in paths) == ["aux_offsets.json", "aux_offsets.safetensors"]
    loaded = load_state(tmp_path)
    assert loaded["mode"] == "global" and loaded["num_steps"] == 3 and loaded["cap"] is None
    assert loaded["optimizer"]["betas"] == [0.9, 0.999]
    torch.testing.assert_close(loaded["raw"], state["raw"], rtol=0, atol=0)
    torch.testing.assert_close(loaded["optimizer"]["step"], state["optimizer"]["step"])
    assert load_state(tmp_path / "missing") is None


def test_tiny_demo_runs(tmp_path):
    from auxdpo.train.demo import run_tiny_demo

    result = run_tiny_demo(tmp_path, steps=2, data_path=None)
    assert result["data"] == "synthetic" and result["steps"] == 2
    assert result["delta_norm"] > 0 and result["final_loss"] > 0
    for key in ("model", "offsets", "metrics", "config"):
        assert (tmp_path / result[key].split("/")[-1]).exists()


def test_pickled_weights_are_refused_and_remote_code_is_off(tmp_path):
    """A folder with only pytorch_model.bin (a pickle) is not loaded: safetensors only."""
    from auxdpo.train.trainer import AuxDPOTrainer

    model = H.model(dtype=torch.float32)
    model.save_pretrained(tmp_path / "safe")  # positive control: safetensors load
    config = H.config(tmp_path / "run", method="dpo")
    assert config.trust_remote_code is False
    trainer = AuxDPOTrainer(str(tmp_path / "safe"), args=config, train_dataset=H.dataset(4),
                            processing_class=H.tokenizer())
    torch.testing.assert_close(trainer.model.transformer.wte.weight, model.transformer.wte.weight)
    model.config.save_pretrained(tmp_path / "m")
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(OSError, match="model.safetensors"):
        AuxDPOTrainer(str(tmp_path / "m"), args=config, train_dataset=H.dataset(4),
                      processing_class=H.tokenizer())


def test_overrides_keep_strategy_strings_and_exponent_floats():
    values = parse_overrides(["--save_strategy", "no", "--learning_rate", "1e-3"])
    assert values == {"save_strategy": "no", "learning_rate": 0.001}
    _, config = resolve_config({**values, "output_dir": "unused", "report_to": [],
                                "use_cpu": True, "bf16": False})
    assert config.save_strategy == "no" and config.learning_rate == 0.001


def test_train_help_lists_config_keys_with_help(capsys):
    import pytest

    from auxdpo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for key, words in (("model_name_or_path", "tiny-gpt2 / tiny-llama"),
                       ("aux_constraint", "null space of A"), ("lambda_null", "null-space"),
                       ("delta_lr", "Learning rate of the offsets"),
                       ("learning_rate", "set your own"), ("bf16", "off on CPU")):
        block = text[text.index(f"\n  {key} (default"):][:400]
        assert words in block, (key, block)
    assert "(default 'global')" in text and "(default 1.0)" in text


def test_summary_metrics_are_the_mean_over_processes(monkeypatch):
    """What every rank's summary reduces to: each metric's mean over the processes."""
    from types import SimpleNamespace

    import accelerate.utils

    from auxdpo.train.run import mean_over_processes

    one = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1))
    assert mean_over_processes(one, {"loss": 0.5}) == {"loss": 0.5}
    ranks = [{"loss": 0.5, "aux/delta_norm": 1.0, "step": 4},
             {"loss": 0.5, "aux/delta_norm": 3.0, "step": 4, "only_here": 7.0}]
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: ranks)
    two = SimpleNamespace(accelerator=SimpleNamespace(num_processes=2))
    assert mean_over_processes(two, ranks[0]) == {"aux/delta_norm": 2.0, "loss": 0.5,
                                                  "only_here": 7.0, "step": 4.0}


@pytest.mark.slow
def test_accelerate_launch_prints_one_summary(tmp_path):
    """Two CPU processes (examples/accelerate/ddp_cpu.yaml): rank 0 alone prints the run
    summary, with the metrics' mean over the ranks (~60 s on 2 busy cores)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(root / "examples" / "accelerate" / "ddp_cpu.yaml"), "-m",
                           "auxdpo", "train", "--config", str(root / "examples" /
                                                             "tiny_auxdpo.yaml"),
                           "--output_dir", str(out), "--max_steps", "2",
                           "--per_device_train_batch_size", "2", "--save_strategy", "no"],
                          env=env, timeout=900, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("run: ")] == [f"run: {out}"]
    final = json.loads(next(line for line in lines if line.startswith("final: "))[7:])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [entry for entry in logged if "loss" in entry][-1]
    assert final["loss"] == pytest.approx(last["loss"], rel=1e-5)  # gathered: equal on ranks
    assert final["step"] == 2 and "aux/delta_norm" in final
