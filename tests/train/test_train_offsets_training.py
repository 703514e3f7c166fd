"""AuxDPO's objective inside the trainer: how its offsets are built from the config and the
path options (the JVP method, the amplitude term's sign), and what the notebook objective
changes (δ′ inside β, trained in the model's optimizer)."""

from __future__ import annotations

import pytest
import torch
import train_helpers as H

from auxdpo.train.notebook import NotebookTraining
from auxdpo.train.offsets_training import OffsetsTraining
from auxdpo.train.trainer import AuxDPOTrainer, PathOptions


def _trainer(tmp_path, model=None, options=None, **overrides):
    return AuxDPOTrainer(model or H.model(), args=H.config(tmp_path, **overrides),
                         train_dataset=H.dataset(4), processing_class=H.tokenizer(),
                         path_options=options)


@pytest.mark.parametrize("dtype, options, preset, expected", [
    (torch.float32, None, None, "central-difference"),
    (torch.float64, None, None, "central-difference"),
    (torch.bfloat16, None, None, "forward"),                # 16-bit: a quotient underflows
    (torch.bfloat16, PathOptions(jvp="finite-difference"), None, "forward"),
    (torch.float32, PathOptions(jvp="double-vjp"), None, "double-vjp"),
    (torch.float32, None, "notebook", "forward"),           # the preset needs exact products
])
def test_the_jvp_method_follows_dtype_preset_and_options(tmp_path, dtype, options, preset,
                                                        expected):
    trainer = _trainer(tmp_path, model=H.model(dtype=dtype), options=options,
                       method="auxdpo", aux_preset=preset)
    assert trainer.offsets.products.jvp_method == expected


def test_a_negative_lambda_amp_rewards_the_amplitude(tmp_path):
    rewarded = _trainer(tmp_path / "a", method="auxdpo", aux_constraint="batch",
                        lambda_amp=-0.2, delta_cap=2.0)
    assert (rewarded.offsets.lambda_amp, rewarded.offsets.amp_sign) == (0.2, -1)
    penalised = _trainer(tmp_path / "b", method="auxdpo", aux_constraint="batch",
                         lambda_amp=0.2)
    assert (penalised.offsets.lambda_amp, penalised.offsets.amp_sign) == (0.2, 1)


def test_the_objective_is_chosen_by_method_and_preset(tmp_path):
    assert _trainer(tmp_path / "dpo", method="dpo").aux is None
    assert type(_trainer(tmp_path / "aux", method="auxdpo").aux) is OffsetsTraining
    notebook = _trainer(tmp_path / "nb", method="auxdpo", aux_preset="notebook")
    assert type(notebook.aux) is NotebookTraining
    assert notebook.aux.model_optimizer_parameters() == [notebook.offsets.raw]


def test_the_notebook_objective_reads_its_offsets_inside_beta(tmp_path):
    """δ in reward units = β·δ′: with δ′ set, the loss's offsets are β times the store's."""
    trainer = _trainer(tmp_path, method="auxdpo", aux_preset="notebook", beta=0.5)
    with torch.no_grad():
        trainer.offsets.raw.copy_(torch.linspace(-1.0, 1.0, trainer.offsets.raw.numel()))
    index = torch.arange(4)
    raw_chosen, raw_rejected = trainer.offsets.deltas(index)
    chosen, rejected = trainer.aux.deltas(index)
    assert torch.equal(chosen, 0.5 * raw_chosen) and torch.equal(rejected, 0.5 * raw_rejected)
    plain = _trainer(tmp_path / "plain", method="auxdpo", beta=0.5)
    assert torch.equal(plain.aux.deltas(index)[0], plain.offsets.deltas(index)[0])
