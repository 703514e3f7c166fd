"""RewardBench 2 (``allenai/reward-bench-2``): a best-of-N evaluation set and training pairs.

Row schema (split ``test``): ``id``, ``prompt`` (str), ``chosen`` (list of str), ``rejected``
(list of str), ``subset`` (Factuality, Precise IF, Math, Safety, Focus, Ties); ``num_correct``,
``num_incorrect``, ``total_completions``, ``models``, ``additional_metadata`` are optional here
but checked when present. Ties rows carry ids ``ref:N`` / ``tied:N`` (the official Ties score
pairs them by N), which the scorer needs.

* :func:`load_rewardbench2` keeps one row per prompt (``id, prompt, chosen, rejected, subset,
  num_correct``): the best-of-N evaluation set scored by
  :func:`auxdpo.harness.evaluation.rewardbench2.rewardbench2_scores`.
* :func:`rewardbench2_pairs` expands rows into training pairs for the ID setting: by default
  every chosen × rejected combination (``mode="all"``: 3 pairs for a usual 1-vs-3 row), or
  ``mode="one"``: the first chosen against one rejected drawn with ``seed``.
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

from auxdpo.data.schema import (
    CONTENT,
    Problem,
    load_normalized,
    normalize_records,
    require_list,
    require_text,
    to_dataset,
)

__all__ = ["RB2_SUBSETS", "BEST_OF_N_COLUMNS", "RB2_PAIR_COLUMNS", "normalize_rewardbench2",
           "load_rewardbench2", "rewardbench2_pairs", "count_rewardbench2_pairs"]

RB2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
BEST_OF_N_COLUMNS = ("id", "prompt", "chosen", "rejected", "subset", "num_correct")
RB2_PAIR_COLUMNS = ("id", "prompt_id", "prompt", "chosen", "rejected", "subset")
_TIES_ID = re.compile(r"^(ref|tied):\d+$")


def normalize_rewardbench2(records: list[tuple[int, Any]]) -> tuple[list[dict], list[Problem]]:
    """Rows → (best-of-N rows with :data:`BEST_OF_N_COLUMNS`, problems found)."""
    return normalize_records(records, _normalize_row)


def _normalize_row(row: int, record: dict, problems: list[Problem]) -> dict | None:
    prompt = require_text(row, record, "prompt", problems)
    subset = require_text(row, record, "subset", problems)
    answers = {}
    for field in ("chosen", "rejected"):
        values = require_list(row, record, field, problems)
        if values is not None and not all(isinstance(value, str) for value in values):
            problems.append(Problem(row, field, "every answer must be a string"))
            values = None
        answers[field] = values
    if record.get("id") is None:
        problems.append(Problem(row, "id", "missing"))
        return None
    if None in (prompt, subset, answers["chosen"], answers["rejected"]):
        return None
    chosen, rejected = answers["chosen"], answers["rejected"]
    for field, expected in (("num_correct", len(chosen)), ("num_incorrect", len(rejected)),
                            ("total_completions", len(chosen) + len(rejected))):
        if field in record and record[field] is not None and record[field] != expected:
            problems.append(Problem(row, field, f"is {record[field]!r} but the lists give "
                                                f"{expected}"))
    if subset.lower() == "ties" and not _TIES_ID.match(str(record["id"])):
        problems.append(Problem(row, "id", f"Ties rows need an id 'ref:N' or 'tied:N', got "
                                           f"{record['id']!r}"))
    if set(chosen) & set(rejected):
        problems.append(Problem(row, "rejected", "an answer appears in both chosen and rejected",
                                CONTENT))
    return {"id": str(record["id"]), "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "subset": subset, "num_correct": len(chosen)}


def load_rewardbench2(source: str | os.PathLike = "allenai/reward-bench-2", split: str = "test"):
    """Load RewardBench 2 as a best-of-N ``datasets.Dataset`` (one row per prompt).

    ``source`` is a local ``.json``/``.jsonl``/``.parquet`` file or a hub name (then
    ``split`` is used). Schema problems raise ``DataFormatError`` naming file, row and field;
    rows with content problems are dropped with a warning.
    """
    return load_normalized(source, split, normalize_rewardbench2, BEST_OF_N_COLUMNS, "rows")


def count_rewardbench2_pairs(items: list[dict], mode: str = "all") -> int:
    """How many training pairs :func:`rewardbench2_pairs` makes from best-of-N rows."""
    _check_mode(mode)
    if mode == "one":
        return len(items)
    return sum(len(item["chosen"]) * len(item["rejected"]) for item in items)


def rewardbench2_pairs(best_of_n, mode: str = "all", seed: int = 0):
    """Best-of-N rows (a Dataset or list of dicts) → training pairs (:data:`RB2_PAIR_COLUMNS`).

    ``mode="all"``: every chosen × rejected pair, ids ``<row id>/<i>-<j>``; ``mode="one"``:
    the first chosen answer against one rejected answer drawn with ``random.Random(seed)``.
    """
    _check_mode(mode)
    rng = random.Random(seed)
    pairs = []
    for item in best_of_n:
        if mode == "one":
            combos = [(0, rng.randrange(len(item["rejected"])))]
        else:
            combos = [(i, j) for i in range(len(item["chosen"]))
                      for j in range(len(item["rejected"]))]
        for i, j in combos:
            pairs.append({"id": f"{item['id']}/{i}-{j}", "prompt_id": item["id"],
                          "prompt": item["prompt"], "chosen": item["chosen"][i],
                          "rejected": item["rejected"][j], "subset": item["subset"]})
    return to_dataset(pairs, RB2_PAIR_COLUMNS)


def _check_mode(mode: str) -> None:
    if mode not in ("all", "one"):
        raise ValueError(f"mode must be 'all' or 'one', got {mode!r}")
