"""The trainer's reference paths change no number: the fused reference pass, truncated
products, the kept reference graph and the shared prefix (the defaults and the
``PathOptions`` that switch them off) equal separate whole-model passes (float64,
parameters, δ and u); dpo's ``tail_reference`` equals TRL's reference pass."""

from __future__ import annotations

import pytest
import torch
import train_helpers as H

from auxdpo.offsets.tail import find_tail, same_inputs
from auxdpo.train.capacity import trainable_parameter_names
from auxdpo.train.reference_pass import FusedReference, ModelReference, TailReference
from auxdpo.train.trainer import AuxDPOTrainer, PathOptions
from tolerance import assert_close

# The exact JVP: the two runs' passes round differently (the tail scores only completion
# positions), which a difference quotient would amplify to its own error level (≈ 1e-7).
EXACT = dict(jvp="forward")
SEPARATE = PathOptions(fuse_reference=False, truncate_products=False, **EXACT)


def _run(out, arch, capacity, mode, options=PathOptions(**EXACT), **overrides):
    values = dict(method="auxdpo", aux_constraint=mode, lambda_null=5.0, delta_lr=0.05,
                  max_steps=4, learning_rate=5e-3, capacity=capacity,
                  per_device_train_batch_size=2, gradient_accumulation_steps=2)
    if mode == "batch":
        values["lambda_amp"] = 0.1
    values.update(overrides)
    trainer = AuxDPOTrainer(H.model(arch, num_layers=2), args=H.config(out, **values),
                            train_dataset=H.dataset(8), processing_class=H.tokenizer(),
                            path_options=options)
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
                                        PathOptions(keep_reference_graph=keep, **EXACT))
    assert isinstance(fast.reference_passes["train"], FusedReference)
    assert fast.offsets.products.truncated
    slow, p_slow, d_slow, u_slow = _run(tmp_path / "slow", arch, capacity, mode, SEPARATE)
    assert isinstance(slow.reference_passes["train"], ModelReference)
    assert not slow.offsets.products.truncated
    assert d_slow.abs().max() > 1e-3                                    # δ really trained
    # Four float64 Adam steps whose passes round differently: 1e5 roundings at each tensor's
    # own scale (≈ 2e-11 relative; Adam's m/√v divides round-off by small gradients).
    for name, value in p_slow.items():
        assert_close(p_fast[name], value, ops=1e5, msg=name)
    assert_close(d_fast, d_slow, ops=1e5)
    if mode == "global":
        assert u_slow.norm() > 0
        assert_close(u_fast, u_slow, ops=1e5)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("arch,capacity,checkpointing", [
    ("gpt2", "last-block", False), ("llama", "lora:2", False), ("gpt2", "lora:2", True),
    ("gpt2", r"regex:^transformer\.ln_f\.", False)])   # no trainable block: the tail is ln_f
def test_shared_prefix_runs_the_prefix_once_per_batch_and_changes_no_number(
        tmp_path, arch, capacity, checkpointing):
    """The policy's forward hands the reference tail its input: the frozen prefix runs once
    per micro-batch instead of twice (plus once for the first batch's check), and every number
    stays the same as with the products' own prefix pass."""
    results, calls = {}, {}
    for share in (True, False):
        model = H.model(arch, num_layers=3)
        first = model.transformer.h[0] if arch == "gpt2" else model.model.layers[0]
        counter = _count_calls(first)
        values = dict(method="auxdpo", aux_constraint="global", lambda_null=5.0,
                      delta_lr=0.05, max_steps=4, learning_rate=5e-3, capacity=capacity,
                      per_device_train_batch_size=2, gradient_accumulation_steps=2,
                      gradient_checkpointing=checkpointing)
        trainer = AuxDPOTrainer(model, args=H.config(tmp_path / str(share), **values),
                                train_dataset=H.dataset(8), processing_class=H.tokenizer(),
                                path_options=PathOptions(share_prefix=share))
        trainer.train()
        assert trainer.offsets.products.share_prefix            # never refused here
        calls[share] = counter[0]
        results[share] = ({k: v.detach().clone() for k, v in trainer.model.named_parameters()},
                          trainer.offsets.table(), trainer.offsets.u)
    micro_batches = 4 * 2
    assert calls[False] - calls[True] == micro_batches - 1
    (p_on, d_on, u_on), (p_off, d_off, u_off) = results[True], results[False]
    assert d_off.abs().max() > 1e-3 and u_off.norm() > 0
    # The same forward reached by another route: the tail's kernels may round differently
    # from the whole model's (CPU-dependent), so 1e5 roundings over 4 steps at each scale.
    for name, value in p_off.items():
        assert_close(p_on[name], value, ops=1e5, msg=name)
    assert_close(d_on, d_off, ops=1e5)
    assert_close(u_on, u_off, ops=1e5)


def test_shared_prefix_is_refused_when_dropout_makes_the_inputs_differ(tmp_path):
    """Embedding dropout left on (disable_dropout=False): the policy's prefix output is not
    the reference's, the first batch's check sees it, warns, and the products run their own
    prefix from then on; the reference log-probs stay those of the eval-mode model."""
    model = H.model("gpt2", num_layers=2)
    model.transformer.drop.p = 0.5
    values = dict(method="auxdpo", aux_constraint="global", lambda_null=5.0, delta_lr=0.05,
                  max_steps=2, capacity="last-block", per_device_train_batch_size=2,
                  disable_dropout=False)
    trainer = AuxDPOTrainer(model, args=H.config(tmp_path, **values),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    with pytest.warns(RuntimeWarning, match="differs from the reference"):
        trainer.train()
    products = trainer.offsets.products
    assert not products.share_prefix and products.tail_plan is not None
    batch = next(iter(trainer.dataset_batches()))
    expected = products.logps(batch)                               # own prefix, eval mode
    plan, _ = find_tail(trainer.model, trainable_parameter_names(trainer.model))
    with plan.recording() as store:
        trainer.model.train()
        trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert not same_inputs(store[0], products.tail_plan.capture(batch))
    got = products.linearize(batch, captured=store[0]).logps       # refused: own prefix
    # Bit-exact: refusing means running the very same own-prefix pass as ``products.logps``.
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("method,capacity", [("dpo", "last-block"), ("ipo", "lora:2")])
def test_tail_reference_runs_the_prefix_once_and_changes_no_number(tmp_path, method, capacity):
    """dpo/ipo with ``tail_reference``: the reference is scored through the trainable tail
    from the policy forward's input, and training is the same as with TRL's whole-model
    reference pass. (The hook registered before the trainer is built is carried into its
    frozen reference copy, so ``calls`` counts the first block's runs in both models.)"""
    results, calls = {}, {}
    for tail in (True, False):
        model = H.model("gpt2", num_layers=3)
        counter = _count_calls(model.transformer.h[0])
        values = dict(method=method, max_steps=4, learning_rate=5e-3, capacity=capacity,
                      per_device_train_batch_size=2, gradient_accumulation_steps=2,
                      tail_reference=tail)
        trainer = AuxDPOTrainer(model, args=H.config(tmp_path / str(tail), **values),
                                train_dataset=H.dataset(8), processing_class=H.tokenizer())
        assert isinstance(trainer.reference_passes["train"], TailReference) == tail
        start = {k: v.detach().clone() for k, v in trainer.model.named_parameters()
                 if v.requires_grad}
        trainer.train()
        assert max(float((trainer.model.get_parameter(k).detach() - v).abs().max())
                   for k, v in start.items()) > 1e-4                       # it really trained
        calls[tail] = counter[0]
        results[tail] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    micro_batches = 4 * 2
    # TRL's path: policy + reference per micro-batch. Tail reference: the policy's pass, plus
    # on the first batch the products' checks (whole-model log-probs, own prefix capture).
    assert calls[False] == 2 * micro_batches
    assert calls[True] == micro_batches + 2
    # Four float64 steps through a differently routed reference pass: 1e5 roundings at each
    # parameter's own scale (a near-zero entry still carries its O(1) summands' round-off).
    for name, value in results[False].items():
        assert_close(results[True][name], value, ops=1e5, msg=name)


def test_tail_reference_falls_back_without_a_frozen_prefix(tmp_path):
    trainer = AuxDPOTrainer(H.model("gpt2"), args=H.config(tmp_path, method="dpo",
                                                           capacity="full",
                                                           tail_reference=True),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    assert isinstance(trainer.reference_passes["train"], ModelReference)


def test_tail_reference_is_off_under_a_sharding_engine(tmp_path, monkeypatch):
    """FSDP / ZeRO-3 shard the tensors the tail's products read: TRL's reference pass then."""
    import auxdpo.train.reference_pass as passes

    monkeypatch.setattr(passes, "sharding_engine", lambda model=None: "FSDP")
    trainer = AuxDPOTrainer(H.model("gpt2", num_layers=3),
                            args=H.config(tmp_path, method="dpo", capacity="last-block",
                                          tail_reference=True),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    assert isinstance(trainer.reference_passes["train"], ModelReference)
