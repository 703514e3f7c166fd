"""The trainer's offset keys: response keying on data with repeated responses, the same run
as row keying where every response is unique, coverage report and start-up warning, exact
kill-and-resume with shared offsets (float64)."""

from __future__ import annotations

import json
import warnings

import datasets
import pytest
import torch
import train_helpers as H
from test_train_checkpoint import StopAt

from auxdpo.train.aux_defaults import DEFAULT_NULL_WEIGHTS
from auxdpo.train.offsets_training import COVERAGE_FILE
from auxdpo.train.trainer import AuxDPOTrainer


def comparison_dataset(prompts: int = 4) -> datasets.Dataset:
    """Every prompt has 3 responses compared in 4 pairs: (0,1), (0,2), (1,2), (2,0)."""
    rows = []
    for p in range(prompts):
        answers = [f"{p + 1}{'!' * (p % 2)}", f"no {p}", f"maybe {p + 2}."]
        for a, b in ((0, 1), (0, 2), (1, 2), (2, 0)):
            rows.append({"prompt": f"q{p}: say {p}? ", "chosen": answers[a],
                         "rejected": answers[b]})
    return datasets.Dataset.from_list(rows)


def _trainer(out, data, callbacks=None, **overrides):
    values = dict(method="auxdpo", aux_constraint="global", lambda_null=5.0, delta_lr=0.05,
                  max_steps=4, learning_rate=5e-3)
    values.update(overrides)
    return AuxDPOTrainer(H.model(), args=H.config(out, **values), train_dataset=data,
                         processing_class=H.tokenizer(), callbacks=callbacks)


def _state(trainer):
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    return params, trainer.offsets.values(), trainer.offsets.u


def test_response_keys_share_offsets_and_act_in_one_epoch(tmp_path):
    trainer = _trainer(tmp_path, comparison_dataset(), max_steps=4, num_train_epochs=1)
    keys = trainer.offsets.keys
    assert keys.keying == "response" and keys.num_slots == 12 and keys.num_examples == 16
    assert trainer.offsets.null_weights == DEFAULT_NULL_WEIGHTS
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)      # shared responses: no warning
        trainer.train()
    first = trainer.state.log_history[0]
    assert first["aux/unique_responses"] == 12
    assert first["aux/pairs_per_response"] == pytest.approx(32 / 12)
    assert first["aux/shared_share"] == 1.0
    assert "aux/unique_responses" not in trainer.state.log_history[1]     # logged once
    record = json.loads((tmp_path / COVERAGE_FILE).read_text())
    assert record["aux_offsets"] == "response" and record["warning"] is None
    assert record["planned_epochs"] == pytest.approx(1.0)
    # One epoch (16 rows, batch 4): a response's δ moved after an earlier pair of it entered
    # later pairs' losses, so the run is no longer DPO.
    dpo = AuxDPOTrainer(H.model(), args=H.config(tmp_path / "dpo", method="dpo",
                                                 max_steps=4, learning_rate=5e-3),
                        train_dataset=comparison_dataset(), processing_class=H.tokenizer())
    dpo.train()
    later = [e["loss"] for e in trainer.state.log_history[1:4]]
    later_dpo = [e["loss"] for e in dpo.state.log_history[1:4]]
    assert max(abs(a - b) for a, b in zip(later, later_dpo)) > 1e-6


@pytest.mark.parametrize("weights", ["multiplicity", "prompt"])
def test_unique_responses_response_and_row_keys_are_the_same_run(tmp_path, weights):
    runs = {}
    for keying in ("response", "row"):
        trainer = _trainer(tmp_path / keying, H.dataset(8), aux_offsets=keying,
                           aux_null_weights=weights, num_train_epochs=3, max_steps=-1)
        assert torch.equal(trainer.offsets.slots, torch.arange(16).view(8, 2))
        trainer.train()
        runs[keying] = _state(trainer)
    (p_resp, d_resp, u_resp), (p_row, d_row, u_row) = runs["response"], runs["row"]
    assert d_row.abs().max() > 1e-3
    assert torch.equal(d_resp, d_row) and torch.equal(u_resp, u_row)
    assert all(torch.equal(p_resp[name], p_row[name]) for name in p_row)


def test_one_epoch_without_shared_responses_warns_what_to_change(tmp_path):
    with pytest.warns(UserWarning, match="AuxDPO cannot act") as record:
        _trainer(tmp_path / "row", comparison_dataset(), aux_offsets="row",
                 max_steps=1).train()
    messages = [str(w.message) for w in record if "cannot act" in str(w.message)]
    assert len(messages) == 1 and "aux_offsets: response (100%" in messages[0]
    with pytest.warns(UserWarning, match="more than one epoch"):
        _trainer(tmp_path / "unique", H.dataset(8), max_steps=2).train()
    assert json.loads((tmp_path / "unique" / COVERAGE_FILE).read_text())["warning"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)      # two epochs: δ acts
        _trainer(tmp_path / "two", H.dataset(8), max_steps=4).train()


def test_kill_and_resume_with_shared_offsets_equals_uninterrupted_run(tmp_path):
    """16 rows, 12 responses (in 2 or 3 pairs each), batch 4, prompt weights, the prior on δ:
    stop after step 2, resume."""
    extra = dict(max_steps=5, save_strategy="steps", save_steps=2, aux_null_weights="prompt",
                 aux_delta_scale=0.5)
    full = _trainer(tmp_path / "full", comparison_dataset(), **extra)
    full.train()
    params_full, delta_full, u_full = _state(full)
    assert delta_full.abs().max() > 1e-3
    killed = _trainer(tmp_path / "run", comparison_dataset(), callbacks=[StopAt(2)], **extra)
    killed.train()
    resumed = _trainer(tmp_path / "run", comparison_dataset(), **extra)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    params_res, delta_res, u_res = _state(resumed)
    for name, value in params_full.items():
        torch.testing.assert_close(params_res[name], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta_res, delta_full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(u_res, u_full, rtol=1e-9, atol=1e-12)
    other = _trainer(tmp_path / "other", comparison_dataset(), aux_offsets="row", **extra)
    with pytest.raises(ValueError, match="keying"):
        other.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    # Another prior σ on resume is allowed (the config decides) but said.
    extra.update(aux_delta_scale=2.0, max_steps=3)
    changed = _trainer(tmp_path / "changed", comparison_dataset(), **extra)
    with pytest.warns(RuntimeWarning, match="prior's σ = 0.5"):
        changed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))


def test_bad_key_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="aux_offsets"):
        H.config(tmp_path, aux_offsets="pair")
    with pytest.raises(ValueError, match="aux_null_weights"):
        H.config(tmp_path, aux_null_weights="uniform")


def test_multi_comparison_format_shares_responses(tmp_path):
    """RLHFlow-style rows (several pairs per response) through ``auxdpo train``: the keys
    find every distinct conversation once, and one epoch needs no warning."""
    import sys
    from pathlib import Path

    from auxdpo.cli import main
    from auxdpo.data import load_comparisons

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from data_fixtures import MULTI_FIXTURES

    source = MULTI_FIXTURES["rlhflow-ultrafeedback"]
    pairs = load_comparisons(source, "rlhflow-ultrafeedback").to_list()
    distinct = {json.dumps(pair[side]) for pair in pairs for side in ("chosen", "rejected")}
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
        code = main(["train", "--model_name_or_path", "tiny-gpt2", "--tiny_hidden_size", "16",
                     "--dataset_name", str(source), "--dataset_format", "rlhflow-ultrafeedback",
                     "--output_dir", str(out), "--method", "auxdpo", "--max_steps", "1",
                     "--per_device_train_batch_size", str(len(pairs)), "--use_cpu",
                     "--bf16", "false", "--gradient_checkpointing", "false",
                     "--report_to", "[]", "--save_strategy", "no", "--disable_tqdm"])
    assert code == 0
    record = json.loads((out / COVERAGE_FILE).read_text())
    assert record["aux/unique_responses"] == len(distinct) < 2 * len(pairs)
    assert record["aux/shared_share"] > 0 and record["warning"] is None
