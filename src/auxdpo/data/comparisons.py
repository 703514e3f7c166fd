"""Multi-comparison preference sets, expanded into pairwise rows.

Formats (``auxdpo data check --format``, ``dataset_format`` of ``auxdpo train``):

* ``rlhflow-ultrafeedback`` — ``RLHFlow/UltraFeedback-preference-standard`` (split ``train``):
  one pair per row, ``chosen``/``rejected`` message lists holding the prompt as their user
  turn, ``chosen_score``/``rejected_score`` required. A prompt's responses recur across rows.
* ``openbmb-ultrafeedback`` — ``openbmb/UltraFeedback`` (split ``train``): ``instruction`` and
  ``completions`` (usually 4), each with ``response``, ``fine-grained_score`` (the mean of the
  four aspect ratings) and ``overall_score`` (the critique model's score). Every pair of
  completions with different scores becomes a row.
* ``scored-responses`` — a generic file of ``{"prompt", "responses": [...], "scores": [...]}``
  rows (optional ``id``): every pair, as for openbmb.

Expansion rule: for the responses ``i < j`` of one prompt (file order), the one with the higher
score is chosen; equal scores are dropped (``ties="drop"``) or kept as a pair with soft label
p = ½ (``ties="half"``, response ``i`` written as chosen). With a temperature T, every pair
carries p = σ((score_chosen − score_rejected)/T) in the column ``pref_prob`` (the trainer's soft
label); without one, kept ties get p = ½ and the other pairs p = 1 (the hard label), and the
column is absent when no tie is kept.

Output columns: ``id`` (``<row id>/<i>-<j>``, winner index first, or the row id for
RLHFlow), ``source_row`` (1-based row of the file), ``prompt``, ``chosen``, ``rejected``,
``score_chosen``, ``score_rejected`` (+ ``pref_prob``). Texts are copied unchanged, so a
response repeated across pairs is the identical string in every row.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

from auxdpo.data.schema import (
    CONTENT,
    Problem,
    raise_on_schema_problems,
    records_from_source,
    require_list,
    require_text,
    to_dataset,
)

__all__ = ["MULTI_FORMATS", "TIES", "SCORE_FIELDS", "COMPARISON_COLUMNS", "PREF_PROB",
           "ExpansionOptions", "soft_label", "expand_scored", "normalize_comparisons",
           "load_comparisons"]

MULTI_FORMATS = ("rlhflow-ultrafeedback", "openbmb-ultrafeedback", "scored-responses")
TIES = ("drop", "half")
SCORE_FIELDS = ("fine-grained_score", "overall_score")
COMPARISON_COLUMNS = ("id", "source_row", "prompt", "chosen", "rejected", "score_chosen",
                      "score_rejected")
PREF_PROB = "pref_prob"  # the trainer's default soft-label column (AuxDPOConfig.pref_prob_column)


@dataclass(frozen=True)
class ExpansionOptions:
    """How scored responses become pairs.

    ``ties``: ``drop`` (default) or ``half`` (keep equal scores as p = ½). ``temperature``:
    None for hard labels, else T > 0 for p = σ(Δscore/T). ``score_field`` (openbmb only):
    ``fine-grained_score`` (default: the mean aspect rating, which binarized UltraFeedback sets
    also use, because ``overall_score`` gives some poorly rated responses a 10) or
    ``overall_score``.
    """

    ties: str = "drop"
    temperature: float | None = None
    score_field: str = "fine-grained_score"

    def __post_init__(self):
        if self.ties not in TIES:
            raise ValueError(f"ties must be one of {', '.join(TIES)}; got {self.ties!r}")
        if self.temperature is not None and (isinstance(self.temperature, bool) or not (
                isinstance(self.temperature, (int, float)) and self.temperature > 0
                and math.isfinite(self.temperature))):
            raise ValueError(f"soft-label temperature must be a positive number or None; "
                             f"got {self.temperature!r}")
        if self.score_field not in SCORE_FIELDS:
            raise ValueError(f"score field must be one of {', '.join(SCORE_FIELDS)}; "
                             f"got {self.score_field!r}")

    @property
    def labels_column(self) -> bool:
        """Whether the pairs carry ``pref_prob`` (soft labels, or kept ties)."""
        return self.temperature is not None or self.ties == "half"


def soft_label(score_chosen: float, score_rejected: float, temperature: float) -> float:
    """p = σ((score_chosen − score_rejected)/T), written to avoid overflow for any sign."""
    z = (score_chosen - score_rejected) / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _label(score_chosen: float, score_rejected: float, options: ExpansionOptions) -> float:
    if options.temperature is not None:
        return soft_label(score_chosen, score_rejected, options.temperature)
    return 0.5 if score_chosen == score_rejected else 1.0


def expand_scored(row: int, row_id: str, prompt: str, scored: list[tuple[int, str, float]],
                  options: ExpansionOptions) -> list[dict]:
    """Every pair of ``scored`` = ``[(index, text, score)]`` (distinct texts), by the rule above."""
    pairs = []
    for a in range(len(scored)):
        for b in range(a + 1, len(scored)):
            first, second = scored[a], scored[b]
            if first[2] == second[2] and options.ties == "drop":
                continue
            winner, loser = (second, first) if second[2] > first[2] else (first, second)
            pair = {"id": f"{row_id}/{winner[0]}-{loser[0]}", "source_row": row,
                    "prompt": prompt, "chosen": winner[1], "rejected": loser[1],
                    "score_chosen": winner[2], "score_rejected": loser[2]}
            if options.labels_column:
                pair[PREF_PROB] = _label(winner[2], loser[2], options)
            pairs.append(pair)
    return pairs


def _number(row: int, field: str, value: Any, problems: list[Problem]) -> float | None:
    """A finite score, or None: a missing/NaN score is content (that response is not
    compared); any other type is a schema problem."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        problems.append(Problem(row, field, "no score (response not compared)", CONTENT))
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
        problems.append(Problem(row, field, f"expected a finite number, got {value!r}"))
        return None
    return float(value)


def _distinct(row: int, candidates: list[tuple[int, str, float, str]],
              problems: list[Problem]) -> list[tuple[int, str, float]]:
    """Keep the first of responses whose texts are identical (a pair of them says nothing)."""
    seen: dict[str, str] = {}
    kept = []
    for index, text, score, field in candidates:
        if text in seen:
            problems.append(Problem(row, field, f"same text as {seen[text]} (kept once)", CONTENT))
            continue
        seen[text] = field
        kept.append((index, text, score))
    return kept


def _scored_row(row: int, record: dict, problems: list[Problem], options: ExpansionOptions
                ) -> tuple[str, str, list] | None:
    prompt = require_text(row, record, "prompt", problems)
    responses = require_list(row, record, "responses", problems)
    scores = require_list(row, record, "scores", problems)
    if prompt is None or responses is None or scores is None:
        return None
    if len(responses) != len(scores):
        problems.append(Problem(row, "scores", f"has {len(scores)} entries for "
                                               f"{len(responses)} responses"))
        return None
    candidates = []
    for index, (text, score) in enumerate(zip(responses, scores)):
        field = f"responses[{index}]"
        if not isinstance(text, str):
            problems.append(Problem(row, field, f"expected a string, got {type(text).__name__}"))
            continue
        value = _number(row, f"scores[{index}]", score, problems)
        if not text.strip():
            problems.append(Problem(row, field, "empty string (response not compared)", CONTENT))
        elif value is not None:
            candidates.append((index, text, value, field))
    row_id = str(record["id"]) if record.get("id") is not None else str(row)
    return row_id, prompt, _distinct(row, candidates, problems)


def _openbmb_row(row: int, record: dict, problems: list[Problem], options: ExpansionOptions
                 ) -> tuple[str, str, list] | None:
    prompt = require_text(row, record, "instruction", problems)
    completions = require_list(row, record, "completions", problems)
    if prompt is None or completions is None:
        return None
    candidates = []
    for index, completion in enumerate(completions):
        name = f"completions[{index}]"
        if not isinstance(completion, dict):
            problems.append(Problem(row, name, f"expected an object, got "
                                               f"{type(completion).__name__}"))
            continue
        text = completion.get("response")
        if not isinstance(text, str):
            problems.append(Problem(row, f"{name}.response", "missing" if text is None else
                                    f"expected a string, got {type(text).__name__}"))
            continue
        value = _number(row, f"{name}.{options.score_field}",
                        completion.get(options.score_field), problems)
        if not text.strip():
            problems.append(Problem(row, f"{name}.response", "empty string (response not "
                                                             "compared)", CONTENT))
        elif value is not None:
            candidates.append((index, text, value, f"{name}.response"))
    return str(row), prompt, _distinct(row, candidates, problems)


def _rlhflow_pairs(row: int, record: dict, problems: list[Problem], options: ExpansionOptions
                   ) -> list[dict]:
    from auxdpo.data.ultrafeedback import normalize_ultrafeedback

    found: list[Problem] = []
    scores = [_number(row, name, record.get(name), found) if name in record else None
              for name in ("chosen_score", "rejected_score")]
    for name in ("chosen_score", "rejected_score"):
        if name not in record:
            found.append(Problem(row, name, "missing"))
    items, pair_problems = normalize_ultrafeedback([(row, record)])
    found += pair_problems
    problems += found
    if found or not items:
        return []
    chosen, rejected = scores
    if chosen < rejected:
        problems.append(Problem(row, "chosen_score", f"{chosen:g} is below rejected_score "
                                                     f"{rejected:g}", CONTENT))
        return []
    if chosen == rejected and options.ties == "drop":
        return []
    item = items[0]
    pair = {"id": item["id"], "source_row": row, "prompt": item["prompt"],
            "chosen": item["chosen"], "rejected": item["rejected"], "score_chosen": chosen,
            "score_rejected": rejected}
    if options.labels_column:
        pair[PREF_PROB] = _label(chosen, rejected, options)
    return [pair]


_SCORED_ROWS = {"openbmb-ultrafeedback": _openbmb_row, "scored-responses": _scored_row}


def normalize_comparisons(fmt: str, records: list[tuple[int, Any]],
                          options: ExpansionOptions | None = None
                          ) -> tuple[list[dict], list[Problem]]:
    """Rows of ``fmt`` (one of :data:`MULTI_FORMATS`) → (pair rows, problems found).

    A row with a schema problem yields nothing; a response without a score or with a repeated
    text is left out of its row's pairs; a row left with no pair is itself a problem.
    """
    if fmt not in MULTI_FORMATS:
        raise ValueError(f"format must be one of {', '.join(MULTI_FORMATS)}; got {fmt!r}")
    options = options or ExpansionOptions()
    pairs: list[dict] = []
    problems: list[Problem] = []
    for row, record in records:
        if not isinstance(record, dict):
            problems.append(Problem(row, "<row>", f"expected an object, got "
                                                  f"{type(record).__name__}"))
            continue
        found: list[Problem] = []
        if fmt == "rlhflow-ultrafeedback":
            pairs += _rlhflow_pairs(row, record, found, options)
        else:
            parsed = _SCORED_ROWS[fmt](row, record, found, options)
            if parsed is not None and not any(p.kind != CONTENT for p in found):
                row_id, prompt, scored = parsed
                expanded = expand_scored(row, row_id, prompt, scored, options)
                if not expanded:
                    why = ("fewer than 2 scored responses" if len(scored) < 2 else
                           "every score ties (ties='drop')")
                    found.append(Problem(row, "<row>", f"no pair: {why}", CONTENT))
                pairs += expanded
        problems += found
    return pairs, problems


def load_comparisons(source: str | os.PathLike, fmt: str, *, split: str = "train",
                     options: ExpansionOptions | None = None, config: str | None = None):
    """Load a multi-comparison set (local file or hub name) as a ``datasets.Dataset`` of pairs.

    Schema problems raise :class:`~auxdpo.data.schema.DataFormatError` naming the file, row and
    field; content problems (a response without a score, a repeated response, a row with no
    pair) are left out with one ``UserWarning``.
    """
    options = options or ExpansionOptions()
    label, records, problems = records_from_source(source, split, config)
    pairs, row_problems = normalize_comparisons(fmt, records, options)
    problems += row_problems
    raise_on_schema_problems(label, problems)
    if problems:
        rows = len({problem.row for problem in problems})
        warnings.warn(f"{label}: left out {len(problems)} responses or rows on {rows} rows "
                      f"(first: {problems[0]})", stacklevel=2)
    if not pairs:
        raise ValueError(f"{label}: no usable preference pairs")
    columns = COMPARISON_COLUMNS + ((PREF_PROB,) if options.labels_column else ())
    return to_dataset(pairs, columns)
