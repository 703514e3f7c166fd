"""Sequence-length limits shared by training and evaluation.

* :func:`clamp_to_positions`: a ``max_length`` above the model's position limit (GPT-2's
  ``n_positions``, Llama/Qwen's ``max_position_embeddings``) would index past the position
  table (an IndexError deep in the model, or silent garbage with rotary embeddings); it is
  clamped to the limit with a warning.
* :func:`drop_far_overlong_rows`: a row whose text is so long that it must exceed
  ``max_length`` many times over is dropped *before* tokenisation, so one 30 MB row cannot make
  the tokenizer allocate gigabytes for tokens that truncation would throw away. The bound is
  exact: no token of the vocabulary covers more than ``L`` characters (``L`` = the longest
  non-special token's text), so a text of more than ``2 · L · max_length`` characters has more
  than twice ``max_length`` tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["OVERLONG_FACTOR", "char_limit", "clamp_to_positions", "drop_far_overlong_rows",
           "position_limit"]

logger = logging.getLogger(__name__)

OVERLONG_FACTOR = 2  # "far over": at least this many times max_length in tokens
_FALLBACK_CHARS_PER_TOKEN = 64  # tokenizers without a readable vocabulary


def position_limit(model) -> int | None:
    """The number of positions the model can embed, or None when its config names none."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def clamp_to_positions(max_length: int | None, model, what: str) -> int | None:
    """``max_length`` clamped to :func:`position_limit` (with a warning when it changes).

    ``None`` (no limit) becomes the position limit too, since nothing longer can be scored.
    """
    limit = position_limit(model)
    if limit is None or (max_length is not None and max_length <= limit):
        return max_length
    logger.warning("%s: max_length=%s exceeds the model's %d positions; using max_length=%d",
                   what, max_length, limit, limit)
    return limit


def _chars_per_token(tokenizer) -> int:
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError, TypeError):
        return _FALLBACK_CHARS_PER_TOKEN
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    lengths = [len(token) for token in vocab if token not in special]
    return max(lengths) if lengths else _FALLBACK_CHARS_PER_TOKEN


def char_limit(tokenizer, max_length: int) -> int:
    """Characters beyond which a text certainly has over ``OVERLONG_FACTOR · max_length``
    tokens (see the module docstring)."""
    return OVERLONG_FACTOR * max_length * _chars_per_token(tokenizer)


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Sequence):
        return sum(len(m.get("content") or "") for m in value if isinstance(m, Mapping))
    return 0


def drop_far_overlong_rows(dataset, tokenizer, max_length: int | None, name: str,
                           number_column: str | None = None):
    """``dataset`` without the rows whose prompt plus either response exceeds
    :func:`char_limit`; the dropped rows are logged by number (1-based, or the values of
    ``number_column`` when the dataset has it)."""
    if max_length is None or tokenizer is None:
        return dataset
    limit = char_limit(tokenizer, max_length)
    columns = dataset.column_names
    row_numbers = dataset[number_column] if number_column in columns else None
    prompts = dataset["prompt"] if "prompt" in columns else [""] * len(dataset)
    keep, dropped = [], []
    for i, (prompt, chosen, rejected) in enumerate(zip(prompts, dataset["chosen"],
                                                       dataset["rejected"])):
        size = _chars(prompt) + max(_chars(chosen), _chars(rejected))
        (dropped if size > limit else keep).append(i)
    if not dropped:
        return dataset
    numbers = [row_numbers[i] if row_numbers is not None else i + 1 for i in dropped]
    shown = ", ".join(map(str, numbers[:10])) + (" ..." if len(numbers) > 10 else "")
    logger.warning("%s dataset: dropped %d row(s) far over max_length=%d (over %d characters, "
                   "so over %d tokens) before tokenizing: rows %s", name, len(dropped),
                   max_length, limit, OVERLONG_FACTOR * max_length, shown)
    return dataset.select(keep)
