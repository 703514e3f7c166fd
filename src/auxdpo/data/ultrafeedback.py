"""UltraFeedback preference pairs, from three schemas into one.

Accepted row schemas (detected per row):

* **flat** (``$AUXDPO_DATA_DIR/ultrafeedback/train_1k.jsonl``, ``trl-lib`` style): ``prompt``,
  ``chosen``, ``rejected`` strings; optional ``source_index`` and ``metadata{score_chosen,
  score_rejected}``.
* **HuggingFaceH4/ultrafeedback_binarized** (split ``train_prefs``): ``prompt`` string,
  ``prompt_id``, ``chosen``/``rejected`` as ``[{role, content}]`` lists ending in the reply,
  ``score_chosen``, ``score_rejected``.
* **RLHFlow/UltraFeedback-preference-standard** (split ``train``): no ``prompt`` column; the
  prompt is the user turn inside ``chosen``/``rejected`` (which must agree on it),
  ``chosen_score``, ``rejected_score``.

Output columns: ``id`` (str: ``prompt_id``, else ``source_index``, else the row number),
``prompt``, ``chosen``, ``rejected`` (str), ``score_chosen``, ``score_rejected`` (float or None).
"""

from __future__ import annotations

import os
from typing import Any

from auxdpo.data.schema import (
    CONTENT,
    Problem,
    default_source,
    load_normalized,
    normalize_records,
    require_text,
    split_conversation,
)

__all__ = ["DEFAULT_ULTRAFEEDBACK", "PAIR_COLUMNS", "hub_split", "normalize_ultrafeedback",
           "load_ultrafeedback"]

DEFAULT_ULTRAFEEDBACK = default_source("ultrafeedback/train_1k.jsonl",
                                       "HuggingFaceH4/ultrafeedback_binarized")
PAIR_COLUMNS = ("id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected")
_HUB_SPLITS = {"HuggingFaceH4/ultrafeedback_binarized": "train_prefs"}


def hub_split(source: str | os.PathLike) -> str:
    """The split a hub name is read from by default: ``train_prefs`` for
    HuggingFaceH4/ultrafeedback_binarized, ``train`` for the others."""
    return _HUB_SPLITS.get(os.fspath(source), "train")


def normalize_ultrafeedback(records: list[tuple[int, Any]]
                            ) -> tuple[list[dict], list[Problem]]:
    """Rows in any accepted schema → (pairs with :data:`PAIR_COLUMNS`, problems found).

    A row with any problem yields no pair. Identical chosen and rejected texts are a
    content problem: such a pair carries no preference.
    """
    return normalize_records(records, _normalize_row)


def _normalize_row(row: int, record: dict, found: list[Problem]) -> dict | None:
    texts = _pair_texts(row, record, found)
    if texts is None:
        return None
    prompt, chosen, rejected = texts
    if chosen == rejected:
        found.append(Problem(row, "rejected", "identical to chosen (no preference)", CONTENT))
        return None
    score_chosen, score_rejected = _scores(record)
    return {"id": _row_id(row, record), "prompt": prompt, "chosen": chosen,
            "rejected": rejected, "score_chosen": score_chosen, "score_rejected": score_rejected}


def _pair_texts(row: int, record: dict, problems: list[Problem]) -> tuple[str, str, str] | None:
    chosen_raw, rejected_raw = record.get("chosen"), record.get("rejected")
    if not (_is_conversation(chosen_raw) or _is_conversation(rejected_raw)):
        # flat schema: three strings
        texts = [require_text(row, record, name, problems)
                 for name in ("prompt", "chosen", "rejected")]
        return None if None in texts else (texts[0], texts[1], texts[2])
    chosen = split_conversation(row, "chosen", chosen_raw, problems)
    rejected = split_conversation(row, "rejected", rejected_raw, problems)
    if chosen is None or rejected is None:
        return None
    if "prompt" in record:  # H4: the prompt column is authoritative
        prompt = require_text(row, record, "prompt", problems)
        if prompt is None:
            return None
    else:  # RLHFlow: the prompt is the user turn, shared by both conversations
        if chosen[0] != rejected[0]:
            problems.append(Problem(row, "rejected", "user turn differs from the one in chosen"))
            return None
        prompt = chosen[0]
    for name, (_, reply) in (("chosen", chosen), ("rejected", rejected)):
        if not reply.strip():
            problems.append(Problem(row, name, "empty assistant reply", CONTENT))
            return None
    if not prompt.strip():
        problems.append(Problem(row, "prompt", "empty user turn", CONTENT))
        return None
    return prompt, chosen[1], rejected[1]


def _is_conversation(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], dict)


def _scores(record: dict) -> tuple[float | None, float | None]:
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    for source, chosen_key, rejected_key in ((record, "score_chosen", "score_rejected"),
                                             (record, "chosen_score", "rejected_score"),
                                             (metadata, "score_chosen", "score_rejected")):
        if chosen_key in source or rejected_key in source:
            return _as_float(source.get(chosen_key)), _as_float(source.get(rejected_key))
    return None, None


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _row_id(row: int, record: dict) -> str:
    for key in ("prompt_id", "source_index", "id"):
        if record.get(key) is not None:
            return str(record[key])
    return str(row)


def load_ultrafeedback(source: str | os.PathLike = DEFAULT_ULTRAFEEDBACK,
                       split: str | None = None):
    """Load UltraFeedback pairs from a local file or a hub name as a ``datasets.Dataset``.

    ``split`` applies to hub names only (default ``train_prefs`` for the H4 set, else
    ``train``). Raises :class:`~auxdpo.data.schema.DataFormatError` naming the file, row and
    field on a schema mismatch; rows with content problems are dropped with a warning.
    """
    split = split or hub_split(source)
    return load_normalized(source, split, normalize_ultrafeedback, PAIR_COLUMNS,
                           "preference pairs")
