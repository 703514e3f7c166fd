"""A run never ends silently on NaN, never resumes from a half-written checkpoint, and names
the step and rows when it stops."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
import train_helpers as H
from datasets import Dataset

from auxdpo.cli import main
from auxdpo.train.checkpoint import COMPLETE_MARKER, complete_checkpoints, resolve_resume
from auxdpo.train.guards import NonFiniteTrainingError, check_parameters_finite
from auxdpo.train.trainer import AuxDPOTrainer


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _train_args(data, out, *extra):
    return ["train", "--model_name_or_path", "tiny-gpt2", "--tiny_hidden_size", "16",
            "--dataset_name", str(data), "--output_dir", str(out), "--use_cpu", "--bf16",
            "false", "--max_steps", "4", "--per_device_train_batch_size", "4",
            "--report_to", "[]", "--save_strategy", "no", "--disable_tqdm", "true",
            "--max_length", "64", "--method", "dpo", *extra]


def test_infinite_weight_is_refused_at_validation_naming_file_row_field(tmp_path, capsys):
    rows = H.rows(4, weight=[1.0, 1.0, 1.0, 1.0])
    data = tmp_path / "prefs.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in rows).replace('"weight": 1.0}',
                                                                '"weight": Infinity}', 3)
    data.write_text(text.replace('"weight": Infinity}', '"weight": 1.0}', 2))  # row 3 only
    assert main(_train_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"auxdpo train: error: {data}: row 3, field 'weight': expected a finite "
                   "number, got inf")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_diverging_run_stops_naming_the_step_and_saves_nothing(tmp_path, capsys):
    """A learning rate of 1e30 makes step 2's loss NaN (logits overflow after step 1)."""
    data = tmp_path / "prefs.jsonl"
    _write(data, H.rows(8))
    assert main(_train_args(data, tmp_path / "run", "--learning_rate", "1e30")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("auxdpo train: error: training step 2: the loss is nan; batch rows [")
    assert os.listdir(tmp_path / "run") == ["auxdpo_config.yaml"]  # no model, no lock left


def test_nan_loss_names_step_and_source_rows(tmp_path):
    """One batch of all 8 rows, numbered 11..18 in their file: the error lists those."""
    rows = [{**row, "aux_source_row": 11 + i} for i, row in enumerate(H.rows(8))]
    model = H.model()
    trainer = AuxDPOTrainer(model, args=H.config(tmp_path, method="dpo",
                                                 per_device_train_batch_size=8),
                            train_dataset=Dataset.from_list(rows),
                            processing_class=H.tokenizer())
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))  # the policy only, not π_ref
    with pytest.raises(NonFiniteTrainingError, match=r"^training step 1: the loss is nan; "
                       r"batch rows \[11, 12, 13, 14, 15, 16, 17, 18\]"):
        trainer.train()


def test_non_finite_gradient_with_finite_loss_is_caught(tmp_path):
    trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo"),
                            train_dataset=H.dataset(8), processing_class=H.tokenizer())
    name, param = next((n, p) for n, p in trainer.model.named_parameters() if "ln_f" in n)
    param.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteTrainingError,
                       match=rf"^training step 1: the gradient of {name} is not finite"):
        trainer.train()


def test_a_nan_parameter_is_never_saved(tmp_path):
    model = H.model()
    check_parameters_finite(model, "here")  # a finite model passes
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteTrainingError, match="not saving here: parameter .* not finite"):
        check_parameters_finite(model, "here")


def _checkpointing_trainer(out, max_steps, **overrides):
    values = dict(method="auxdpo", aux_constraint="global", lambda_null=5.0, max_steps=max_steps,
                  save_strategy="steps", save_steps=2, metrics_file="metrics.jsonl")
    values.update(overrides)
    return AuxDPOTrainer(H.model(), args=H.config(out, **values), train_dataset=H.dataset(8),
                         processing_class=H.tokenizer())


def test_resume_skips_a_half_written_checkpoint_and_metrics_keep_each_step_once(tmp_path,
                                                                                caplog):
    out = tmp_path / "run"
    _checkpointing_trainer(out, 4).train()
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    # A kill while checkpoint-4 was being written: its optimizer state and marker are missing.
    (out / "checkpoint-4" / COMPLETE_MARKER).unlink()
    (out / "checkpoint-4" / "optimizer.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="auxdpo.train.checkpoint"):
        resumed = _checkpointing_trainer(out, 6)
        resumed.train(resume_from_checkpoint=True)
    assert "skipping incomplete checkpoint-4" in caplog.text
    assert resumed.state.global_step == 6
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text()
             .splitlines() if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (out / "checkpoint-4" / COMPLETE_MARKER).is_file()  # rewritten whole by the resume


def test_a_save_that_dies_midway_leaves_an_unmarked_checkpoint_that_resume_skips(tmp_path):
    """The process dies while checkpoint-4's RNG state is written (after model and optimizer)."""
    out = tmp_path / "run"
    trainer = _checkpointing_trainer(out, 4, method="dpo")
    save_rng = trainer._save_rng_state

    def dying(output_dir):
        if trainer.state.global_step == 4:
            raise KeyboardInterrupt("killed while saving")
        save_rng(output_dir)

    trainer._save_rng_state = dying
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (out / "checkpoint-4" / "optimizer.pt").exists()
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2"]
    assert resolve_resume(str(out), True) == str(out / "checkpoint-2")


def test_resume_refuses_incomplete_or_missing_checkpoints(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(ValueError, match=r"no complete checkpoint .*\(checkpoint-3 incomplete"):
        resolve_resume(str(tmp_path), True)
    with pytest.raises(ValueError, match="checkpoint-3 is incomplete"):
        resolve_resume(str(tmp_path), str(tmp_path / "checkpoint-3"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        resolve_resume(str(tmp_path), str(tmp_path / "checkpoint-9"))
    assert resolve_resume(str(tmp_path), None) is None
    assert resolve_resume(str(tmp_path), False) is None


def test_save_total_limit_rotates_only_complete_checkpoints(tmp_path):
    out = tmp_path / "run"
    _checkpointing_trainer(out, 6, method="dpo", save_total_limit=1).train()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == \
        ["checkpoint-6"]
    assert (out / "checkpoint-6" / COMPLETE_MARKER).is_file()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo never run",))


def test_malicious_pickle_in_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    _write(data, H.rows(8))
    out = tmp_path / "run"
    args = _train_args(data, out, "--save_strategy", "steps", "--save_steps", "2",
                       "--max_steps", "2")
    assert main(args) == 0
    torch.save({"python": _Evil()}, out / "checkpoint-2" / "rng_state.pth")
    capsys.readouterr()
    assert main(_train_args(data, out, "--max_steps", "4", "--resume_from_checkpoint",
                            "true")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error" in line]) == 1
    assert err[-1].startswith(f"auxdpo train: error: checkpoint {out / 'checkpoint-2'}: refused "
                              "to load pickled file(s) rng_state.pth (")
    assert "system" in err[-1]


def test_output_files_honour_the_umask(tmp_path):
    from auxdpo.train.checkpoint import atomic_write_text, save_state

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        save_state({"t": torch.zeros(2)}, tmp_path)
    finally:
        os.umask(old)
    for name in ("a.txt", "aux_offsets.safetensors", "aux_offsets.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_copy_of_complete_checkpoint_is_still_complete(tmp_path):
    """The marker travels with the folder (a checkpoint copied elsewhere resumes)."""
    out = tmp_path / "run"
    _checkpointing_trainer(out, 2, method="dpo").train()
    shutil.copytree(out / "checkpoint-2", tmp_path / "copy" / "checkpoint-2")
    assert resolve_resume(str(tmp_path / "copy"), True) == str(tmp_path / "copy" /
                                                              "checkpoint-2")


def test_a_poisoned_optimizer_state_is_named_not_training_args(tmp_path, capsys):
    """training_args.bin pickles the config's classes but is never loaded on resume: the
    refusal names the file that was refused."""
    data = tmp_path / "prefs.jsonl"
    _write(data, H.rows(8))
    out = tmp_path / "run"
    assert main(_train_args(data, out, "--save_strategy", "steps", "--save_steps", "2",
                            "--max_steps", "2")) == 0
    torch.save({"state": _Evil()}, out / "checkpoint-2" / "optimizer.pt")
    capsys.readouterr()
    assert main(_train_args(data, out, "--max_steps", "4", "--resume_from_checkpoint",
                            "true")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1
    assert err[0].startswith(f"auxdpo train: error: checkpoint {out / 'checkpoint-2'}: refused "
                             "to load pickled file(s) optimizer.pt (posix.system): ")
    assert "training_args.bin" not in err[0]


def _torch_disk_full(at: str):
    """torch.save that fails like torch's zip writer on a full disk, for paths ending ``at``."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(at):
            with open(f, "wb") as handle:
                handle.write(b"PK\x03\x04 cut short")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos "
                               "4416 vs 4310")
        return real(obj, f, *args, **kwargs)

    return save


def test_disk_full_while_saving_a_checkpoint_is_one_line_and_resume_works(tmp_path, capsys,
                                                                          monkeypatch):
    data = tmp_path / "prefs.jsonl"
    _write(data, H.rows(8))
    out = tmp_path / "run"
    args = _train_args(data, out, "--save_strategy", "steps", "--save_steps", "2",
                       "--method", "auxdpo")
    monkeypatch.setattr(torch, "save", _torch_disk_full("checkpoint-4/optimizer.pt"))
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [f"auxdpo train: error: disk full while writing {out}/checkpoint-4/optimizer.pt "
                   "([enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4310); "
                   "removed the incomplete checkpoint-4; free space, then resume with "
                   "resume_from_checkpoint: true (from checkpoint-2)"]
    assert not (out / "checkpoint-4").exists()
    monkeypatch.undo()
    assert main([*args, "--resume_from_checkpoint", "true"]) == 0
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    assert (out / "model.safetensors").is_file()


def test_disk_full_at_the_final_save_names_the_file(tmp_path, capsys, monkeypatch):
    """An OSError ENOSPC carries no file name; the message names the file being written."""
    import errno

    import safetensors.torch

    data = tmp_path / "prefs.jsonl"
    _write(data, H.rows(8))
    out = tmp_path / "run"
    args = _train_args(data, out, "--save_strategy", "steps", "--save_steps", "4",
                       "--method", "auxdpo")
    real = safetensors.torch.save_file
    saves = []

    def save_file(tensors, filename, *rest, **kwargs):  # the offsets' file of the final save
        saves.append(filename)
        if "checkpoint" not in str(filename) and len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, filename, *rest, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [f"auxdpo train: error: disk full while writing {out}/aux_offsets.safetensors "
                   "(No space left on device); free space, then resume with "
                   "resume_from_checkpoint: true (from checkpoint-4)"]
    monkeypatch.undo()
    assert main([*args, "--resume_from_checkpoint", "true"]) == 0
    assert (out / "aux_offsets.safetensors").is_file()


def test_resume_prints_no_missing_tied_weight(tmp_path, capfd):
    """tiny-gpt2 ties lm_head.weight to the input embeddings: saved once, restored with
    them; transformers' "missing keys ... lm_head.weight" said nothing true."""
    from types import SimpleNamespace

    from auxdpo.train.checkpoint import without_tied_keys

    data = tmp_path / "prefs.jsonl"
    _write(data, H.rows(8))
    out = tmp_path / "run"
    args = _train_args(data, out, "--save_strategy", "steps", "--save_steps", "2")
    assert main([*args, "--max_steps", "2"]) == 0
    capfd.readouterr()
    assert main([*args, "--resume_from_checkpoint", "true"]) == 0
    assert "missing keys" not in capfd.readouterr().err
    model = H.model()
    assert model.lm_head.weight is model.transformer.wte.weight
    result = SimpleNamespace(missing_keys=["lm_head.weight"], unexpected_keys=[])
    assert without_tied_keys(model, result).missing_keys == []
    both = SimpleNamespace(missing_keys=["lm_head.weight", "transformer.wte.weight"])
    assert without_tied_keys(model, both).missing_keys == ["lm_head.weight",
                                                            "transformer.wte.weight"]
