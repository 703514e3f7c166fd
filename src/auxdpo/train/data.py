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

__all__ = ["AUX_INDEX", "MAX_WEIGHT", "PREF_PROB", "SOURCE_ROW", "WEIGHT",
           "AuxPreferenceCollator", "RowTable", "validate_preference_rows"]

AUX_INDEX = "aux_index"
PREF_PROB = "pref_prob"
WEIGHT = "weight"
# Optional column: the row's number in its source file (1-based, the line an editor shows),
# used in error messages; the trainer removes it after preparing the data.
SOURCE_ROW = "aux_source_row"
# A weight is a count or an importance factor; beyond this one pair outweighs a million others
# and float32 losses lose every other row's gradient to round-off, so it is refused as a typo.
MAX_WEIGHT = 1e6


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(f"row {row}, field {column!r}: expected a finite number, "
                         f"got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"row {row}, field {column!r}: {value!r} is outside [{low}, {high}]")


class RowTable:
    """A list of row dicts seen as columns (``column_names``, ``table[column]``).

    Lets :func:`validate_preference_rows` check raw rows (e.g. JSON lines) before they become
    an Arrow table, which cannot hold a column of mixed types. A key missing from a row reads
    as None there. ``row_numbers`` (default 1, 2, ...) are the numbers errors name, e.g. the
    lines of a ``.jsonl`` file.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]],
                 row_numbers: Sequence[int] | None = None) -> None:
        self.rows = list(rows)
        self.row_numbers = list(row_numbers) if row_numbers is not None else None
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

    Raises ValueError naming the row (1-based, or the dataset's ``row_numbers`` /
    :data:`SOURCE_ROW` column) and field for: missing columns, non-string content, rows that mix
    plain text and conversations, empty responses, identical chosen and rejected, soft labels
    outside [0, 1] or not finite, weights negative, not finite or above :data:`MAX_WEIGHT`.
    """
    columns = list(dataset.column_names)
    numbers = getattr(dataset, "row_numbers", None)
    if numbers is None and SOURCE_ROW in columns:
        numbers = list(dataset[SOURCE_ROW])
    if numbers is None:
        numbers = range(1, len(dataset) + 1)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(f"dataset is missing column(s) {missing}; found {columns}")
    chosen, rejected = dataset["chosen"], dataset["rejected"]
    prompts = dataset["prompt"] if "prompt" in columns else None
    first_kind = None
    for i, (good, bad) in enumerate(zip(chosen, rejected)):
        row = numbers[i]
        if good == bad:
            raise ValueError(_identical_message(chosen, rejected, numbers))
        fields = [("chosen", good), ("rejected", bad)]
        if prompts is not None:
            fields.insert(0, ("prompt", prompts[i]))
        for column, value in fields:  # TRL reads the first row's kind for every row
            if not isinstance(value, (str, list)):
                continue  # reported by _text_of below
            kind = "plain text" if isinstance(value, str) else "a message list"
            if first_kind is None:
                first_kind = (kind, row, column)
            elif kind != first_kind[0]:
                raise ValueError(f"row {row}, field {column!r}: {kind}, but row {first_kind[1]} "
                                 f"field {first_kind[2]!r} is {first_kind[0]}; a data set is "
                                 "all plain text or all conversations")
        suffix = ""
        if prompts is not None:
            _text_of(prompts[i], row, "prompt")
        elif isinstance(good, type(bad)) and isinstance(good, (str, list)):
            # No prompt column: TRL takes the shared prefix (characters or turns) as the prompt.
            from trl.data_utils import extract_prompt

            parts = extract_prompt({"chosen": good, "rejected": bad})
            good, bad = parts["chosen"], parts["rejected"]
            suffix = " after the shared prefix was taken as the prompt (no 'prompt' column)"
        good_text, bad_text = _text_of(good, row, "chosen"), _text_of(bad, row, "rejected")
        for column, text in (("chosen", good_text), ("rejected", bad_text)):
            if not text.strip():
                raise ValueError(f"row {row}, field {column!r}: empty response{suffix}; "
                                 f"{_DROP_HINT}")
    for column, high, unset in ((pref_prob_column, 1.0, "1: chosen preferred for sure"),
                                (weight_column, MAX_WEIGHT, "1: unweighted")):
        if column and column in columns:
            _check_column(list(dataset[column]), numbers, column, high, unset)
    return len(chosen)


# What to do about rows that carry no preference (UltraFeedback has a few of each kind).
_DROP_HINT = ("drop such rows, or with auxdpo train read the file with dataset_format: "
              "ultrafeedback, which drops them with a warning (auxdpo data check FILE "
              "--format ultrafeedback lists them)")


def _identical_message(chosen: list, rejected: list, numbers) -> str:
    """The first row whose chosen and rejected are identical, with how many rows are."""
    rows = [numbers[i] for i, (good, bad) in enumerate(zip(chosen, rejected)) if good == bad]
    listed = ", ".join(str(row) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return (f"row {rows[0]}: chosen and rejected are identical ({len(rows)} of {len(chosen)} "
            f"rows are: {listed}); {_DROP_HINT}")


def _check_column(values: list, numbers, column: str, high: float, unset: str) -> None:
    """The values given first (a bad one names its own row), then the rows that lack one
    (a column present on some rows only reads as None on the others)."""
    given = [i for i, value in enumerate(values) if value is not None]
    for i in given:
        _check_number(values[i], numbers[i], column, 0.0, high)
    missing = [i for i, value in enumerate(values) if value is None]
    if missing and given:
        raise ValueError(f"row {numbers[missing[0]]}, field {column!r}: missing, but row "
                         f"{numbers[given[0]]} has one ({len(missing)} of {len(values)} rows "
                         f"lack it): give every row a value ({unset}) or none")
    if missing:
        _check_number(None, numbers[missing[0]], column, 0.0, high)


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
