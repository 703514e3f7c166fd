"""The config fields of the prior on the offsets and of the constraint weights: defaults from
``auxdpo.train.aux_defaults``, validation, and what the trainer does with them (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import train_helpers as H
from test_train_keys import comparison_dataset

from auxdpo.offsets.prior import OffsetPrior
from auxdpo.train import aux_defaults
from auxdpo.train.config import AuxDPOConfig
from auxdpo.train.config_check import check_config_values
from auxdpo.train.keys_help import config_keys_help
from auxdpo.train.notebook import NotebookTraining
from auxdpo.train.trainer import AuxDPOTrainer


def _trainer(out, **overrides):
    values = dict(method="auxdpo", aux_constraint="global", lambda_null=5.0, delta_lr=0.05,
                  max_steps=2, learning_rate=5e-3)
    values.update(overrides)
    return AuxDPOTrainer(H.model(), args=H.config(out, **values),
                         train_dataset=comparison_dataset(2), processing_class=H.tokenizer())


def test_defaults_come_from_the_constants(tmp_path):
    config = H.config(tmp_path)
    assert config.aux_delta_scale == aux_defaults.DEFAULT_DELTA_SCALE
    assert config.aux_null_weights == aux_defaults.DEFAULT_NULL_WEIGHTS
    assert config.aux_delta_half_count == aux_defaults.DEFAULT_DELTA_HALF_COUNT
    help_text = config_keys_help()
    assert f"aux_delta_scale (default {aux_defaults.DEFAULT_DELTA_SCALE!r})" in help_text
    assert f"aux_null_weights (default {aux_defaults.DEFAULT_NULL_WEIGHTS!r})" in help_text


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
@pytest.mark.parametrize("key", ["aux_delta_scale", "aux_delta_half_count"])
def test_bad_scales_are_named(tmp_path, value, key):
    with pytest.raises(ValueError, match=key):
        H.config(tmp_path, **{key: value})


def test_config_values_are_type_checked():
    with pytest.raises(ValueError, match="aux_delta_scale: expected a number"):
        check_config_values({"aux_delta_scale": "wide"}, AuxDPOConfig)
    check_config_values({"aux_delta_scale": None}, AuxDPOConfig)
    check_config_values({"aux_delta_scale": 2}, AuxDPOConfig)


def test_the_trainer_hands_sigma_to_the_offsets_and_logs_the_prior(tmp_path):
    trainer = _trainer(tmp_path, aux_delta_scale=0.5, aux_delta_half_count=None)
    assert trainer.offsets.delta_scale == 0.5 and trainer.offsets.prior_precision == 4.0
    trainer.train()
    logged = [e for e in trainer.state.log_history if "aux/prior" in e]
    # step 2's value is (τ/2n)‖δ‖² at step 1's end (τ = 4, n = 8), δ ≠ 0 by then
    assert len(logged) == 2 and logged[0]["aux/prior"] == 0.0
    assert logged[1]["aux/prior"] == pytest.approx(4 / 16 * logged[0]["aux/delta_norm"] ** 2,
                                                   rel=1e-12)
    assert logged[1]["aux/prior"] > 0


def test_the_trainer_hands_the_half_count_to_the_offsets(tmp_path):
    trainer = _trainer(tmp_path, aux_delta_scale=0.5, aux_delta_half_count=3.0)
    counts = trainer.offsets.keys.counts().double()
    assert trainer.offsets.delta_half_count == 3.0
    # slot_tau is float32 (δ's dtype): compare at float32 round-off
    torch.testing.assert_close(trainer.offsets.slot_tau.double(), 4.0 * (1 + 3.0 / counts),
                               rtol=1e-6, atol=0)


def test_no_prior_runs_no_prior_code_in_the_trainer(tmp_path, monkeypatch):
    """aux_delta_scale: None — neither the offsets' step nor the notebook preset adds a prior
    (no ``aux/prior`` metric; the preset's prior never runs), so the run is the one before
    the prior existed; with σ set, both do."""
    def refuse(*args, **kwargs):
        raise AssertionError("prior code ran")

    monkeypatch.setattr(OffsetPrior, "add_grad", refuse)
    monkeypatch.setattr(NotebookTraining, "prior", refuse)
    trainer = _trainer(tmp_path / "off", aux_delta_scale=None)
    trainer.train()
    assert not trainer.offsets.prior_precision
    assert not any("aux/prior" in e for e in trainer.state.log_history)
    notebook = dict(aux_preset="notebook", lambda_null=1.0, delta_lr=1e-2, aux_offsets="row")
    _trainer(tmp_path / "nb_off", aux_delta_scale=None, **notebook).train()
    with pytest.raises(AssertionError, match="prior code ran"):
        _trainer(tmp_path / "on", aux_delta_scale=1.0).train()
    with pytest.raises(AssertionError, match="prior code ran"):
        _trainer(tmp_path / "nb_on", aux_delta_scale=1.0, **notebook).train()
