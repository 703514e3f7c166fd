"""Inputs that cost memory or run code: far-overlong rows, remote code, pickled weights."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import train_helpers as H
import trl.trainer.dpo_trainer as trl_dpo
from datasets import Dataset

from auxdpo.lengths import OVERLONG_FACTOR, char_limit, clamp_to_positions, position_limit
from auxdpo.train.guards import safe_model_init_kwargs
from auxdpo.train.trainer import AuxDPOTrainer


def test_far_overlong_row_is_dropped_before_it_is_tokenized(tmp_path, caplog, monkeypatch):
    """The character tokenizer's tokens cover 1 character: at max_length 40 any text over
    2·40 characters has over 80 tokens. A 200 000-character response never reaches it."""
    assert char_limit(H.tokenizer(), 40) == OVERLONG_FACTOR * 40 == 80
    seen = []
    tokenize = trl_dpo._tokenize

    def spy(processing_class, text, *args, **kwargs):
        seen.append(len(text))
        return tokenize(processing_class, text, *args, **kwargs)

    monkeypatch.setattr(trl_dpo, "_tokenize", spy)
    data = H.rows(6)
    data[3]["rejected"] = "z" * 200_000
    data[5]["prompt"] = "p" * 60  # under the character bound: TRL drops it after tokenizing
    with caplog.at_level(logging.WARNING):
        trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo", max_length=40),
                                train_dataset=Dataset.from_list(data),
                                processing_class=H.tokenizer())
    assert max(seen) < 1000
    assert "dropped 1 row(s) far over max_length=40 (over 80 characters" in caplog.text
    assert "rows 4" in caplog.text
    assert trainer.dropped_examples["train"] == 2 and len(trainer.train_dataset) == 4


def test_position_limit_and_clamp(caplog):
    model = H.model()  # tiny GPT-2: 256 positions
    assert position_limit(model) == 256
    assert clamp_to_positions(100, model, "x") == 100
    with caplog.at_level(logging.WARNING, logger="auxdpo.lengths"):
        assert clamp_to_positions(1000, model, "x") == 256
    assert "x: max_length=1000 exceeds the model's 256 positions" in caplog.text
    assert clamp_to_positions(None, model, "x") == 256


def test_trainer_clamps_max_length_to_positions(tmp_path):
    trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo", max_length=4096),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    assert trainer.args.max_length == 256


def test_remote_code_warns_naming_files_and_safetensors_cannot_be_turned_off(tmp_path):
    (tmp_path / "modeling_evil.py").write_text("import os\n")
    (tmp_path / "config.json").write_text("{}")
    args = SimpleNamespace(model_init_kwargs=None, trust_remote_code=True)
    with pytest.warns(UserWarning, match=r"trust_remote_code is on: loading .* runs 1 "
                                         r"file\(s\) in .*: modeling_evil.py"):
        kwargs = safe_model_init_kwargs(args, str(tmp_path))
    assert kwargs == {"use_safetensors": True, "trust_remote_code": True}
    off = SimpleNamespace(model_init_kwargs={"use_safetensors": False}, trust_remote_code=False)
    with pytest.raises(ValueError, match="use_safetensors cannot be turned off"):
        safe_model_init_kwargs(off, str(tmp_path))
    plain = SimpleNamespace(model_init_kwargs={"dtype": "float32"}, trust_remote_code=False)
    assert safe_model_init_kwargs(plain, str(tmp_path)) == {
        "dtype": "float32", "use_safetensors": True, "trust_remote_code": False}
