"""Tiny causal LMs and an offline character tokenizer, for tests, the demo and CLI smoke runs.

No hub access is needed: the tokenizer is built with ``tokenizers`` (one token per printable
ASCII character, plus ``<pad>``, ``<eos>``, ``<unk>``: 99 tokens) and wrapped in
``PreTrainedTokenizerFast`` with a minimal chat template; models are created from configs with
random weights. The CLI accepts ``tiny-gpt2``, ``tiny-llama``, ``tiny-qwen2`` and
``tiny-qwen3`` as ``model_name_or_path``.
"""

from __future__ import annotations

import string

import torch

__all__ = ["TINY_ARCHITECTURES", "build_char_tokenizer", "build_tiny_model", "is_tiny_name"]

TINY_ARCHITECTURES = ("gpt2", "llama", "qwen2", "qwen3")
_SPECIALS = ("<pad>", "<eos>", "<unk>")
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


def is_tiny_name(name: str) -> bool:
    """True for the special model names ``tiny-<architecture>``."""
    return isinstance(name, str) and name.startswith("tiny-") and \
        name[len("tiny-"):] in TINY_ARCHITECTURES


def build_char_tokenizer():
    """A 99-token character-level ``PreTrainedTokenizerFast`` (pad 0, eos 1, unk 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {token: i for i, token in enumerate(list(_SPECIALS) + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                                        eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(architecture: str = "gpt2", *, vocab_size: int = 99, num_layers: int = 2,
                     hidden_size: int = 32, num_heads: int = 2, max_positions: int = 256,
                     dtype: torch.dtype = torch.float32, seed: int = 0):
    """A randomly initialised causal LM of the given family; dropout off, pad/eos = 0/1."""
    import transformers as tf

    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"architecture must be one of {TINY_ARCHITECTURES}, got {architecture!r}")
    common = dict(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if architecture == "gpt2":
        config = tf.GPT2Config(n_layer=num_layers, n_embd=hidden_size, n_head=num_heads,
                               n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0,
                               attn_pdrop=0.0, **common)
    else:
        family = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config}
        extra = {"head_dim": hidden_size // num_heads} if architecture == "qwen3" else {}
        config = family[architecture](
            num_hidden_layers=num_layers, hidden_size=hidden_size,
            intermediate_size=2 * hidden_size, num_attention_heads=num_heads,
            num_key_value_heads=num_heads, max_position_embeddings=max_positions,
            tie_word_embeddings=False, **extra, **common)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    return model.to(dtype)
