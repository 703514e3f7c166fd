"""The trainer's fused reference pass and truncated products change no number: a run with
``aux_fused_reference``/``aux_truncate_products``/``aux_keep_reference_graph`` on equals the
run with separate whole-model passes (float64, parameters, δ and u)."""

from __future__ import annotations

import pytest
import torch
import train_helpers as H

from auxdpo.train.trainer import AuxDPOTrainer

SEPARATE = dict(aux_fused_reference=False, aux_truncate_products=False)


def _run(out, arch, capacity, mode, **overrides):
    values = dict(method="auxdpo", aux_constraint=mode, lambda_null=5.0, delta_lr=0.05,
                  max_steps=4, learning_rate=5e-3, capacity=capacity,
                  per_device_train_batch_size=2, gradient_accumulation_steps=2)
    if mode == "batch":
        values["lambda_amp"] = 0.1
    values.update(overrides)
    trainer = AuxDPOTrainer(H.model(arch, num_layers=2), args=H.config(out, **values),
                            train_dataset=H.dataset(8), processing_class=H.tokenizer())
    trainer.train()
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    return trainer, params, trainer.offsets.table(), trainer.offsets.u


@pytest.mark.parametrize("arch,capacity,mode,keep", [
    ("gpt2", "last-block", "global", False),
    ("gpt2", "lora:2", "global", True),
    pytest.param("llama", "last-block", "global", True, marks=pytest.mark.slow),
    pytest.param("qwen3", "last-block", "batch", False, marks=pytest.mark.slow),
])
def test_fused_truncated_run_equals_separate_passes(tmp_path, arch, capacity, mode, keep):
    fast, p_fast, d_fast, u_fast = _run(tmp_path / "fast", arch, capacity, mode,
                                        aux_keep_reference_graph=keep)
    assert fast._fuse_reference and fast.offsets.products.truncated
    slow, p_slow, d_slow, u_slow = _run(tmp_path / "slow", arch, capacity, mode, **SEPARATE)
    assert not slow._fuse_reference and not slow.offsets.products.truncated
    assert d_slow.abs().max() > 1e-3                                    # δ really trained
    for name, value in p_slow.items():
        torch.testing.assert_close(p_fast[name], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d_fast, d_slow, rtol=1e-10, atol=1e-12)
    if mode == "global":
        assert u_slow.norm() > 0
        torch.testing.assert_close(u_fast, u_slow, rtol=1e-9, atol=1e-12)
