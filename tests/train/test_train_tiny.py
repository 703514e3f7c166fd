"""Tiny random causal LMs of four families and the offline character tokenizer."""

from __future__ import annotations

import string

import pytest
import torch

from auxdpo.train.tiny import (
    TINY_ARCHITECTURES,
    build_char_tokenizer,
    build_tiny_model,
    is_tiny_name,
)


@pytest.mark.parametrize("name, tiny", [("tiny-gpt2", True), ("tiny-qwen3", True),
                                        ("tiny-llama", True), ("tiny-bert", False),
                                        ("tiny-", False), ("gpt2", False),
                                        ("org/tiny-gpt2", False), (None, False)])
def test_tiny_names(name, tiny):
    assert is_tiny_name(name) is tiny


def test_char_tokenizer_has_99_tokens_one_per_character_and_round_trips():
    tokenizer = build_char_tokenizer()
    assert len(tokenizer) == 99
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    text = "Hi, 2+2 = 4!\n"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text) and all(i >= 3 for i in ids)
    assert ids[0] == 3 + string.printable.index("H")
    assert tokenizer.decode(ids) == text
    assert tokenizer("é")["input_ids"] == [2]  # outside printable ASCII: <unk>


def test_chat_template_renders_roles_and_the_generation_prompt():
    tokenizer = build_char_tokenizer()
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "user: 2+2?\nassistant: 4\n"
    assert tokenizer.apply_chat_template(messages[:1], tokenize=False,
                                         add_generation_prompt=True) == "user: 2+2?\nassistant: "


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
def test_models_follow_their_arguments_and_seed(architecture):
    kwargs = dict(num_layers=1, hidden_size=8, num_heads=2, max_positions=16,
                  dtype=torch.float64)
    model = build_tiny_model(architecture, seed=3, **kwargs)
    again = build_tiny_model(architecture, seed=3, **kwargs)
    other = build_tiny_model(architecture, seed=4, **kwargs)
    config = model.config
    assert config.model_type == architecture
    assert (config.vocab_size, config.pad_token_id, config.eos_token_id) == (99, 0, 1)
    assert (config.num_hidden_layers, config.hidden_size) == (1, 8)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    ids = torch.tensor([[5, 6, 7, 8]])
    logits = model.eval()(ids).logits
    assert logits.shape == (1, 4, 99)
    torch.testing.assert_close(again(ids).logits, logits, rtol=0, atol=0)  # same init, same ops
    assert not torch.equal(other(ids).logits, logits)
    torch.testing.assert_close(model.train()(ids).logits, logits, rtol=0, atol=0)  # dropout off


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError) as exc:
        build_tiny_model("mistral")
    assert str(exc.value) == ("architecture must be one of ('gpt2', 'llama', 'qwen2', "
                              "'qwen3'), got 'mistral'")
