"""Sequence-length limits: position limits of any config, the character bound, dropping rows.

The trainer's use (a far-overlong row never reaches the tokenizer, clamping a tiny GPT-2's
max_length) is tested in tests/train/test_train_inputs.py.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from datasets import Dataset

from auxdpo.lengths import (
    OVERLONG_FACTOR,
    char_limit,
    clamp_to_positions,
    drop_far_overlong_rows,
    position_limit,
)
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model


class VocabTokenizer:
    """A tokenizer with a readable vocabulary: its longest non-special token has 5 chars."""

    all_special_tokens = ["<|a_very_long_special_token|>"]

    def get_vocab(self):
        return {"a": 0, "abc": 1, "hello": 2, "<|a_very_long_special_token|>": 3}


def model_with(**config):
    return SimpleNamespace(config=SimpleNamespace(**config))


def test_position_limit_reads_each_config_name_in_order():
    assert position_limit(build_tiny_model("llama", max_positions=48)) == 48
    assert position_limit(model_with(n_ctx=1024)) == 1024
    assert position_limit(model_with(max_position_embeddings=4096, n_positions=512)) == 4096
    assert position_limit(model_with(max_position_embeddings=None, n_positions=0)) is None
    assert position_limit(SimpleNamespace()) is None


def test_no_limit_leaves_max_length_as_it_is(caplog):
    with caplog.at_level(logging.WARNING, logger="auxdpo.lengths"):
        assert clamp_to_positions(10_000, SimpleNamespace(), "eval") == 10_000
        assert clamp_to_positions(None, SimpleNamespace(), "eval") is None
        assert clamp_to_positions(64, model_with(n_positions=64), "eval") == 64
    assert caplog.text == ""


def test_char_limit_uses_the_longest_non_special_token():
    assert OVERLONG_FACTOR == 2
    assert char_limit(VocabTokenizer(), 10) == 2 * 10 * 5
    # the character tokenizer: one character a token (its specials are not counted)
    assert char_limit(build_char_tokenizer(), 7) == 2 * 7 * 1
    # no readable vocabulary: 64 characters a token
    assert char_limit(object(), 3) == 2 * 3 * 64


def test_rows_far_over_are_dropped_and_named_by_their_number_column(caplog):
    """Limit at max_length 4 with 5-character tokens: 40 characters of prompt plus the
    longer response. Chat rows count their messages' contents."""
    chat = [{"role": "user", "content": "x" * 20}, {"role": "assistant", "content": "y" * 21}]
    data = Dataset.from_list([
        {"prompt": "p" * 20, "chosen": "c" * 20, "rejected": "r", "line": 3},   # 40: kept
        {"prompt": "p" * 20, "chosen": "c", "rejected": "r" * 21, "line": 5},   # 41: dropped
        {"prompt": "", "chosen": "c" * 41, "rejected": "r", "line": 9},         # 41: dropped
        {"prompt": "", "chosen": "c", "rejected": "r", "line": 11},             # kept
    ])
    with caplog.at_level(logging.WARNING, logger="auxdpo.lengths"):
        kept = drop_far_overlong_rows(data, VocabTokenizer(), 4, "train", number_column="line")
    assert kept["line"] == [3, 11]
    assert ("train dataset: dropped 2 row(s) far over max_length=4 (over 40 characters, so "
            "over 8 tokens) before tokenizing: rows 5, 9") in caplog.text
    chats = Dataset.from_list([{"chosen": chat, "rejected": chat[:1]},
                               {"chosen": chat[:1], "rejected": chat[:1]}])
    assert len(drop_far_overlong_rows(chats, VocabTokenizer(), 4, "eval")) == 1  # 41 > 40


def test_nothing_to_drop_returns_the_dataset_itself(caplog):
    data = Dataset.from_list([{"prompt": "p", "chosen": "a" * 100, "rejected": "b"}] * 12)
    assert drop_far_overlong_rows(data, VocabTokenizer(), None, "train") is data
    assert drop_far_overlong_rows(data, None, 4, "train") is data
    assert drop_far_overlong_rows(data, VocabTokenizer(), 100, "train") is data
    with caplog.at_level(logging.WARNING, logger="auxdpo.lengths"):
        assert len(drop_far_overlong_rows(data, VocabTokenizer(), 2, "train")) == 0
    assert "dropped 12 row(s)" in caplog.text
    assert "rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ..." in caplog.text  # 1-based, first ten


@pytest.mark.parametrize("max_length", [1, 3])
def test_the_bound_holds_for_the_character_tokenizer(max_length):
    """A text over char_limit characters really has over OVERLONG_FACTOR·max_length tokens."""
    tokenizer = build_char_tokenizer()
    text = "~" * (char_limit(tokenizer, max_length) + 1)
    assert len(tokenizer(text)["input_ids"]) > OVERLONG_FACTOR * max_length
