"""Invariances of a training run: kill-and-resume, and batch size × accumulation."""

from __future__ import annotations

import pytest
import torch
import train_helpers as H
from transformers import TrainerCallback

from auxdpo.train.checkpoint import load_state
from auxdpo.train.trainer import DELTAS_FILE, AuxDPOTrainer, PathOptions
from tolerance import assert_close


class StopAt(TrainerCallback):
    """Stop training right after optimizer step ``k`` (a kill after the checkpoint is written)."""

    def __init__(self, k):
        self.k = k

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            control.should_training_stop = True
        return control


def _trainer(out, n=12, callbacks=None, **overrides):
    # Row keys with multiplicity weights: the layout and numbers of per-pair offsets
    # (response keys are tested in test_train_keys.py); the prior on δ on, strong enough to
    # matter (σ = 0.3: τ/n ≈ 1 against a DPO gradient of ≈ 0.5/n per row).
    values = dict(method="auxdpo", aux_constraint="global", lambda_null=5.0, delta_lr=0.05,
                  max_steps=5, save_strategy="steps", save_steps=2, learning_rate=5e-3,
                  aux_offsets="row", aux_null_weights="multiplicity", aux_delta_scale=0.3)
    options = overrides.pop("path_options", None)
    values.update(overrides)
    return AuxDPOTrainer(H.model(), args=H.config(out, **values), train_dataset=H.dataset(n),
                         processing_class=H.tokenizer(), callbacks=callbacks,
                         path_options=options)


def _state(trainer):
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    u = None if trainer.offsets.u is None else trainer.offsets.u.clone()
    return params, trainer.offsets.table(), u


@pytest.mark.parametrize("mode,capacity", [("global", "full"), ("batch", "full"),
                                           ("global", "last-block"),
                                           ("projection", r"regex:ln_f\.weight$")])
def test_kill_and_resume_equals_uninterrupted_run(tmp_path, mode, capacity):
    """12 rows, batch 4 (3 steps an epoch, shuffled): stop after step 2 (mid-epoch), resume,
    with the prior on δ. ``last-block`` runs the fused reference pass with truncated
    products; projection trains the final norm's weight (d = 16 < 2n = 24: a null space)."""
    extra = {"lambda_amp": 0.1} if mode == "batch" else {}
    extra["capacity"] = capacity
    full = _trainer(tmp_path / "full", aux_constraint=mode, **extra)
    full.train()
    params_full, delta_full, u_full = _state(full)
    assert delta_full.abs().max() > 1e-3  # δ really trained

    killed = _trainer(tmp_path / "run", aux_constraint=mode, callbacks=[StopAt(2)], **extra)
    killed.train()
    assert killed.state.global_step == 2
    resumed = _trainer(tmp_path / "run", aux_constraint=mode, **extra)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    params_res, delta_res, u_res = _state(resumed)
    assert load_state(tmp_path / "run" / "checkpoint-2")["delta_scale"] == 0.3
    assert resumed.offsets.prior_precision == full.offsets.prior_precision == 1 / 0.3**2
    assert "aux/prior" in resumed.state.log_history[-2]

    # Round-off of three float64 optimizer steps at each tensor's own scale, not bit-exact:
    # the resumed run rebuilds its reference products and u, which may round differently.
    for name, value in params_full.items():
        assert_close(params_res[name], value, ops=1e4, msg=name)
    assert_close(delta_res, delta_full, ops=1e4)
    if mode == "global":
        assert u_full.norm() > 0
        assert_close(u_res, u_full, ops=1e4)


@pytest.mark.parametrize("mode", ["global", "batch"])
def test_kill_and_resume_is_bit_exact_in_float32(tmp_path, mode):
    """float32, the shipped dtype of small models: a resumed run restores what every step
    depends on (parameters, optimizer states, δ, its optimizer, u, the JVP's step state), so it
    ends bit for bit where the uninterrupted run ends."""
    def run(out, callbacks=None):
        return AuxDPOTrainer(H.model(dtype=torch.float32),
                             args=H.config(out, method="auxdpo", aux_constraint=mode,
                                           lambda_null=5.0, delta_lr=0.05, max_steps=5,
                                           save_strategy="steps", save_steps=2,
                                           learning_rate=5e-3, aux_delta_scale=0.3),
                             train_dataset=H.dataset(12), processing_class=H.tokenizer(),
                             callbacks=callbacks)

    full = run(tmp_path / "full")
    full.train()
    params_full, delta_full, u_full = _state(full)
    run(tmp_path / "run", callbacks=[StopAt(2)]).train()
    resumed = run(tmp_path / "run")
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    params_res, delta_res, u_res = _state(resumed)
    assert delta_full.dtype == torch.float32 and delta_full.abs().max() > 1e-3
    for name, value in params_full.items():
        assert torch.equal(params_res[name], value), name
    assert torch.equal(delta_res, delta_full)
    if mode == "global":
        assert torch.equal(u_res, u_full)


def test_checkpoint_holds_offsets_without_pickle(tmp_path):
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.train()
    folder = tmp_path / "checkpoint-2"
    state = load_state(folder)
    assert state["num_steps"] == 2
    torch.testing.assert_close(state["raw"], trainer.offsets.raw.detach())
    assert (folder / DELTAS_FILE).exists() and (folder / "model.safetensors").exists()
    assert not list(folder.glob("*.bin")) or {p.name for p in folder.glob("*.bin")} == \
        {"training_args.bin"}


# Exact JVP: the identity holds to round-off. The default one-sided difference JVP evaluates
# A_Bᵀu per micro-batch with its own step, so the penalty's δ-gradient differs by its relative
# error (≈ 1e-7 in float64) and the runs agree to that level, not to round-off.
@pytest.mark.parametrize("jvp,rtol", [("forward", 1e-9), ("finite-difference", 1e-6)])
def test_batch8_equals_batch4_times_accumulation2(tmp_path, jvp, rtol):
    """Same data order (same seed), float64, dropout off: parameters and δ agree."""
    runs = {}
    for batch, accumulation in ((8, 1), (4, 2)):
        trainer = _trainer(tmp_path / f"b{batch}", n=16, max_steps=3, save_strategy="no",
                           per_device_train_batch_size=batch,
                           gradient_accumulation_steps=accumulation,
                           path_options=PathOptions(jvp=jvp))
        trainer.train()
        runs[batch] = _state(trainer)
    (p8, d8, u8), (p4, d4, u4) = runs[8], runs[4]
    assert d8.abs().max() > 1e-3
    for a, b in [(p4[name], p8[name]) for name in p8] + [(d4, d8), (u4, u8)]:
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))
    if jvp == "finite-difference":      # …and the difference is really there, at that level
        assert not torch.allclose(d4, d8, rtol=1e-12, atol=0)
