"""Capacity presets unfreeze exactly what they say (counts from the configs, by hand)."""

from __future__ import annotations

import pytest
import torch
import train_helpers as H
from peft import get_peft_model

from auxdpo.train.capacity import apply_capacity, find_blocks, lora_target_modules
from auxdpo.train.config import parse_capacity
from auxdpo.train.trainer import AuxDPOTrainer
from tolerance import assert_close

E = 16  # hidden size of the tiny models below


def _count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gpt2_block():
    # ln_1, ln_2: 2E each; c_attn: E·3E + 3E; attn.c_proj: E·E + E; c_fc: E·4E + 4E;
    # mlp.c_proj: 4E·E + E  →  12E² + 13E
    return 12 * E * E + 13 * E


def llama_block():
    # two RMSNorms: E each; q, k, v, o: E² each (no bias); gate, up, down: E·2E each → 10E² + 2E
    return 10 * E * E + 2 * E


def test_last_block_of_four_layer_gpt2_is_exactly_that_block():
    model = H.model("gpt2", num_layers=4, hidden=E)
    plan = apply_capacity(model, "last-block")
    assert _count(model) == gpt2_block() == 3280
    assert all(name.startswith("transformer.h.3.") for name in plan.trainable)
    assert len(plan.trainable) == 12  # 6 modules × (weight, bias)


@pytest.mark.parametrize("fraction, blocks", [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4),
                                              (0.3, 2)])
def test_last_fraction_unfreezes_ceil_fraction_of_blocks(fraction, blocks):
    model = H.model("gpt2", num_layers=4, hidden=E)
    plan = apply_capacity(model, f"last:{fraction}")
    assert _count(model) == blocks * gpt2_block()
    first = 4 - blocks
    assert {name.split(".")[2] for name in plan.trainable} == {str(i) for i in range(first, 4)}


def test_llama_last_block_and_full():
    model = H.model("llama", num_layers=3, hidden=E)
    apply_capacity(model, "last-block")
    assert _count(model) == llama_block() == 2592
    apply_capacity(model, "full")
    assert _count(model) == sum(p.numel() for p in model.parameters())


def test_regex_selects_by_name():
    model = H.model("gpt2", num_layers=2, hidden=E)
    plan = apply_capacity(model, r"regex:^transformer\.ln_f\.")
    assert plan.trainable == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert _count(model) == 2 * E


@pytest.mark.parametrize("arch, tensors, expected", [
    # GPT-2: fused c_attn (E → 3E) and c_proj (E → E): 2 matrices × 2 factors;
    # A is r×E, B is out×r: 4E + 3E·4 + 4E + E·4 = 384 for r = 4
    ("gpt2", 4, 4 * E + 3 * E * 4 + 4 * E + E * 4),
    # Llama/Qwen: q, k, v, o (E → E): 4 matrices × 2 factors, each factor 4·E = 64 → 512
    ("llama", 8, 8 * 4 * E),
    ("qwen2", 8, 8 * 4 * E),
    ("qwen3", 8, 8 * 4 * E),
])
def test_lora4_on_last_block_attention(arch, tensors, expected):
    model = H.model(arch, num_layers=3, hidden=E)
    plan = apply_capacity(model, "lora:4")
    prefix, _ = find_blocks(model)
    assert all(t.startswith(f"{prefix}.2.") for t in lora_target_modules(model))
    wrapped = get_peft_model(model, plan.peft_config)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert len(trainable) == tensors
    assert all(".2." in n and "lora_" in n for n in trainable)
    assert _count(wrapped) == expected


def test_lora_trainer_reference_is_base_model_with_adapters_disabled(tmp_path):
    """After the adapters move, the trainer's reference log-probs are still the base model's."""
    base = H.model("gpt2", num_layers=2, hidden=E)
    untouched = H.model("gpt2", num_layers=2, hidden=E)
    trainer = AuxDPOTrainer(base, args=H.config(tmp_path, method="dpo", capacity="lora:2"),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    assert _count(trainer.model) == 2 * E + 3 * E * 2 + 2 * E + E * 2
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.3)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    from auxdpo.logps import model_sequence_logps
    with torch.no_grad():
        ref = trainer.reference_passes["eval"].logps(batch)
        policy = trainer.sequence_logps(trainer.model, kwargs, batch)[0]
        expected = model_sequence_logps(untouched, batch)
    assert_close(ref, expected, ops=100)            # one forward by another route
    assert (policy - expected).abs().max() > 1e-3


@pytest.mark.parametrize("spec", ["", "last:0", "last:1.5", "last:x", "lora:0", "lora:a",
                                  "regex:(", "half", "top:3"])
def test_bad_capacity_specs_are_rejected(spec):
    with pytest.raises(ValueError, match="capacity"):
        parse_capacity(spec)


def test_regex_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="no parameter trainable"):
        apply_capacity(H.model(), "regex:^nothing$")


def test_presets_and_peft_configs_do_not_mix(tmp_path):
    plan = apply_capacity(H.model(), "lora:2")
    with pytest.raises(ValueError, match="leave capacity at 'full'"):
        AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo", capacity="last-block"),
                      train_dataset=H.dataset(4), processing_class=H.tokenizer(),
                      peft_config=plan.peft_config)
