"""Which reference pass the trainer takes, decided once at construction, and what each pass
returns (values against a brute-force float64 log-softmax, hand-computed averages)."""

from __future__ import annotations

import pytest
import torch
import train_helpers as H

from auxdpo.train.reference_pass import (
    FusedReference,
    ModelReference,
    PrecomputedReference,
    TailReference,
    model_inputs,
)
from auxdpo.train.trainer import AuxDPOTrainer, PathOptions
from tolerance import assert_close


def _trainer(tmp_path, model=None, options=None, **overrides):
    return AuxDPOTrainer(model or H.model(), args=H.config(tmp_path, **overrides),
                         train_dataset=H.dataset(4), processing_class=H.tokenizer(),
                         path_options=options)


def _brute_force_logps(model, batch):
    """Per-token log-softmax sums over the completion tokens of every row, float64."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.double()
    mask = batch["completion_mask"][:, 1:].bool()
    token = torch.log_softmax(logits[:, :-1], -1).gather(
        -1, batch["input_ids"][:, 1:, None])[..., 0]
    return (token * mask).sum(1)


@pytest.mark.parametrize("overrides, train_kind, eval_kind", [
    (dict(method="auxdpo"), FusedReference, ModelReference),
    (dict(method="auxdpo", aux_constraint="batch"), FusedReference, ModelReference),
    (dict(method="auxdpo", aux_constraint="projection", capacity=r"regex:ln_f"),
     ModelReference, ModelReference),
    (dict(method="auxdpo", aux_preset="notebook"), ModelReference, ModelReference),
    (dict(method="dpo"), ModelReference, ModelReference),
    (dict(method="dpo", tail_reference=True, capacity="last-block"), TailReference,
     ModelReference),
    (dict(method="dpo", tail_reference=True), ModelReference, ModelReference),  # no prefix
    (dict(method="auxdpo", precompute_ref_log_probs=True), PrecomputedReference,
     PrecomputedReference),
], ids=["global", "batch", "projection", "notebook", "dpo", "dpo-tail", "dpo-tail-full",
        "precomputed"])
def test_the_pass_is_chosen_at_construction(tmp_path, overrides, train_kind, eval_kind):
    trainer = _trainer(tmp_path, **overrides)
    assert type(trainer.reference_passes["train"]) is train_kind
    assert type(trainer.reference_passes["eval"]) is eval_kind


def test_path_options_switch_the_fused_pass_off(tmp_path):
    trainer = _trainer(tmp_path, options=PathOptions(fuse_reference=False), method="auxdpo")
    assert type(trainer.reference_passes["train"]) is ModelReference


@pytest.mark.parametrize("overrides", [dict(method="dpo"), dict(method="auxdpo"),
                                       dict(method="dpo", capacity="lora:2"),
                                       dict(method="dpo", tail_reference=True,
                                            capacity="last-block")],
                         ids=["frozen-copy", "fused", "lora-adapters-off", "tail"])
def test_every_pass_gives_the_reference_models_log_probs(tmp_path, overrides):
    """After the policy moves, each pass still scores π_ref = the initial model: equal to a
    brute-force float64 log-softmax of an untouched copy, to one forward's round-off."""
    untouched = H.model()
    trainer = _trainer(tmp_path, model=H.model(), **overrides)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():                         # move the trainable tensors only
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator,
                                             dtype=param.dtype))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    expected = _brute_force_logps(untouched, batch)
    trainer.model.train()
    policy_calls = []

    def policy():
        policy_calls.append(1)
        return trainer.sequence_logps(trainer.model, model_inputs(batch), batch)

    ref, (policy_logps, _) = trainer.reference_passes["train"].run(batch, policy)
    assert policy_calls == [1]                                  # the policy ran once
    assert_close(ref.double(), expected, ops=100)
    assert (policy_logps.double() - expected).abs().max() > 1e-3   # the policy did move
    assert_close(trainer.reference_passes["eval"].logps(batch).double(), expected, ops=100)


def test_precomputed_reference_divides_by_the_response_lengths_when_averaging():
    inputs = {"ref_chosen_logps": torch.tensor([-4.0, -6.0]),
              "ref_rejected_logps": torch.tensor([-3.0, -9.0]),
              "completion_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1],
                                               [0, 0, 1, 0], [1, 1, 1, 1]])}
    assert torch.equal(PrecomputedReference(False).logps(inputs),
                       torch.tensor([-4.0, -6.0, -3.0, -9.0]))
    # response tokens: completion_mask[:, 1:] sums 2, 3, 1, 3
    assert torch.equal(PrecomputedReference(True).logps(inputs),
                       torch.tensor([-2.0, -2.0, -3.0, -3.0]))


def test_the_fused_pass_without_a_shared_prefix_runs_before_the_policy(tmp_path):
    """capacity full has no frozen prefix: the fused pass runs first, so that its transient
    tangents are freed before the policy's graph is built."""
    trainer = _trainer(tmp_path, method="auxdpo")
    fused = trainer.reference_passes["train"]
    assert fused.plan is None
    order = []
    original = fused.logps
    fused.logps = lambda inputs, captured=None: (order.append("reference"),
                                                 original(inputs, captured))[1]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    fused.run(batch, lambda: order.append("policy"))
    assert order == ["reference", "policy"]
