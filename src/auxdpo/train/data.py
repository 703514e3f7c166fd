"""Preference data for the trainer: row-level validation and the index-attaching collator.

Rows are TRL's preference format: ``prompt`` (optional: without it, the shared prefix of
``chosen`` and ``rejected`` is the prompt, as in TRL), ``chosen``, ``rejected``; each a string, or
a list of ``{"role", "content"}`` messages (an assistant turn may carry ``tool_calls`` instead
of ``content``; a ``tools`` column is passed to the chat template by TRL). Optional numeric columns carry a soft label (probability
that chosen ≻ rejected, in [0, 1]) and a per-example weight (≥ 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["AUX_INDEX", "PREF_PROB", "WEIGHT", "AuxPreferenceCollator", "RowTable",
           "validate_preference_rows"]

AUX_INDEX = "aux_index"
PREF_PROB = "pref_prob"
WEIGHT = "weight"


def _message_text(message: Any, k: int, where: str) -> str:
    """The text of one chat message; a ValueError says what is wrong with it."""
    if not isinstance(message, Mapping):
        raise ValueError(f"{where}: message {k} must be a dict with 'role' and 'content', got "
                         f"{type(message).__name__}")
    if not isinstance(message.get("role"), str):
        raise ValueError(f"{where}: message {k} has no 'role' string (keys: {sorted(message)})")
    content, tool_calls = message.get("content"), message.get("tool_calls")
    if content is None:
        if tool_calls:  # an assistant turn that only calls tools (TRL's tool-calling format)
            return json.dumps(tool_calls, sort_keys=True, default=str)
        raise ValueError(f"{where}: message {k} ({message['role']}) has neither 'content' nor "
                         "'tool_calls'")
    if isinstance(content, list):
        raise ValueError(f"{where}: message {k} content is a list of parts (multimodal); only "
                         "text content (a string) is supported")
    if not isinstance(content, str):
        raise ValueError(f"{where}: message {k} content must be a string, got "
                         f"{type(content).__name__}")
    return content + (json.dumps(tool_calls, sort_keys=True, default=str) if tool_calls else "")


def _text_of(value: Any, row: int, column: str) -> str:
    """The text content of a string or a message list; ValueError naming row and field."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        where = f"row {row}, field {column!r}"
        return "\n".join(_message_text(message, k, where) for k, message in enumerate(value))
    raise ValueError(f"row {row}, field {column!r}: expected a string or a list of messages, "
                     f"got {type(value).__name__}")


def _check_number(value: Any, row: int, column: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"row {row}, field {column!r}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"row {row}, field {column!r}: {value!r} is outside [{low}, {high}]")


class RowTable:
    """A list of row dicts seen as columns (``column_names``, ``table[column]``).

    Lets :func:`validate_preference_rows` check raw rows (e.g. JSON lines) before they become
    an Arrow table, which cannot hold a column of mixed types. A key missing from a row reads
    as None there.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = list(rows)
        names: dict[str, None] = {}
        for row in self.rows:
            names.update(dict.fromkeys(row))
        self.column_names = list(names)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> list:
        return [row.get(column) for row in self.rows]


def validate_preference_rows(dataset, *, pref_prob_column: str | None = PREF_PROB,
                             weight_column: str | None = WEIGHT) -> int:
    """Check every row of a map-style dataset; return the number of rows.

    Raises ValueError naming the row and field for: missing columns, non-string content,
    empty responses, identical chosen and rejected, soft labels outside [0, 1], negative or
    non-finite weights.
    """
    columns = list(dataset.column_names)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(f"dataset is missing column(s) {missing}; found {columns}")
    chosen, rejected = dataset["chosen"], dataset["rejected"]
    prompts = dataset["prompt"] if "prompt" in columns else None
    for row, (good, bad) in enumerate(zip(chosen, rejected)):
        if good == bad:
            raise ValueError(f"row {row}: chosen and rejected are identical")
        suffix = ""
        if prompts is not None:
            _text_of(prompts[row], row, "prompt")
        elif isinstance(good, type(bad)) and isinstance(good, (str, list)):
            # No prompt column: TRL takes the shared prefix (characters or turns) as the prompt.
            from trl.data_utils import extract_prompt

            parts = extract_prompt({"chosen": good, "rejected": bad})
            good, bad = parts["chosen"], parts["rejected"]
            suffix = " after the shared prefix was taken as the prompt (no 'prompt' column)"
        good_text, bad_text = _text_of(good, row, "chosen"), _text_of(bad, row, "rejected")
        for column, text in (("chosen", good_text), ("rejected", bad_text)):
            if not text.strip():
                raise ValueError(f"row {row}, field {column!r}: empty response{suffix}")
    if pref_prob_column and pref_prob_column in columns:
        for row, value in enumerate(dataset[pref_prob_column]):
            _check_number(value, row, pref_prob_column, 0.0, 1.0)
    if weight_column and weight_column in columns:
        for row, value in enumerate(dataset[weight_column]):
            _check_number(value, row, weight_column, 0.0, math.inf)
    return len(chosen)


@dataclass
class AuxPreferenceCollator:
    """Wrap TRL's preference collator and carry the per-example extras as ``(B,)`` tensors.

    ``aux_index`` (long), and the soft label / weight columns (renamed to ``pref_prob`` and
    ``weight`` in the batch) when the examples have them.
    """

    base: Callable[[list[dict]], dict]
    pref_prob_column: str | None = PREF_PROB
    weight_column: str | None = WEIGHT

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base(examples)
        first = examples[0]
        if AUX_INDEX in first:
            batch[AUX_INDEX] = torch.tensor([int(e[AUX_INDEX]) for e in examples])
        for column, key in ((self.pref_prob_column, PREF_PROB), (self.weight_column, WEIGHT)):
            if column and column in first:
                batch[key] = torch.tensor([float(e[column]) for e in examples],
                                          dtype=torch.float64)
        return batch
