"""MMLU-Pro (``TIGER-Lab/MMLU-Pro``) as questions and as preference pairs.

Row schema: ``question_id`` (int), ``question`` (str), ``options`` (3 to 10 str), ``answer``
(letter A-J) and/or ``answer_index`` (int; both must agree when both are given), ``category``
(str); ``cot_content`` and ``src`` are ignored.

* :func:`load_mmlu_pro` → one row per question (``id, question, options, answer_index,
  category``): the set scored by option log-likelihood or by generation.
* :func:`mmlu_pro_pairs` → preference pairs, as in the paper (Sec. 7.2): the prompt is the
  question with its lettered options (:func:`format_mmlu_prompt`), the chosen response is the
  correct option's text and the rejected one an incorrect option's text. ``mode="sample"``
  (default) draws one incorrect option per question, seeded per question so a question's pair
  does not depend on row order; ``mode="all"`` keeps every incorrect option. Options whose text
  equals the correct one (the test split has one such duplicate) are never used as rejected.
"""

from __future__ import annotations

import os
import random
from typing import Any

from auxdpo.data.schema import (
    CONTENT,
    Problem,
    default_source,
    load_normalized,
    normalize_records,
    require_list,
    require_text,
    to_dataset,
)

__all__ = ["LETTERS", "DEFAULT_MMLU_PRO", "QUESTION_COLUMNS", "MMLU_PAIR_COLUMNS",
           "normalize_mmlu_pro", "load_mmlu_pro", "format_mmlu_prompt", "incorrect_options",
           "mmlu_pro_pairs"]

LETTERS = "ABCDEFGHIJ"
DEFAULT_MMLU_PRO = default_source("mmlu_pro/test.json", "TIGER-Lab/MMLU-Pro")
QUESTION_COLUMNS = ("id", "question", "options", "answer_index", "category")
MMLU_PAIR_COLUMNS = ("id", "question_id", "question", "prompt", "chosen", "rejected", "category")
MIN_OPTIONS, MAX_OPTIONS = 3, 10


def normalize_mmlu_pro(records: list[tuple[int, Any]]) -> tuple[list[dict], list[Problem]]:
    """Rows → (question rows with :data:`QUESTION_COLUMNS`, problems found)."""
    return normalize_records(records, _normalize_row)


def _normalize_row(row: int, record: dict, problems: list[Problem]) -> dict | None:
    text = require_text(row, record, "question", problems)
    category = require_text(row, record, "category", problems)
    options = require_list(row, record, "options", problems)
    if record.get("question_id") is None:
        problems.append(Problem(row, "question_id", "missing"))
    if options is not None:
        if not all(isinstance(option, str) for option in options):
            problems.append(Problem(row, "options", "every option must be a string"))
            options = None
        elif not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
            problems.append(Problem(row, "options", f"has {len(options)} options; expected "
                                                    f"{MIN_OPTIONS} to {MAX_OPTIONS}"))
            options = None
    answer_index = _answer_index(row, record, None if options is None else len(options), problems)
    if None in (text, category, options, answer_index) or record.get("question_id") is None:
        return None
    if not options[answer_index].strip():
        problems.append(Problem(row, "options", "the correct option is empty", CONTENT))
    elif not incorrect_options(options, answer_index):
        problems.append(Problem(row, "options", "no incorrect option differs from the correct "
                                                "one", CONTENT))
    return {"id": str(record["question_id"]), "question": text, "options": options,
            "answer_index": answer_index, "category": category}


def _answer_index(row: int, record: dict, n_options: int | None,
                  problems: list[Problem]) -> int | None:
    letter, index = record.get("answer"), record.get("answer_index")
    if letter is None and index is None:
        problems.append(Problem(row, "answer", "missing (neither 'answer' nor 'answer_index')"))
        return None
    from_letter = None
    if letter is not None:
        if not isinstance(letter, str) or len(letter.strip()) != 1 or letter.strip() not in LETTERS:
            problems.append(Problem(row, "answer", f"expected a letter A-J, got {letter!r}"))
            return None
        from_letter = LETTERS.index(letter.strip())
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        problems.append(Problem(row, "answer_index", f"expected an int, got {index!r}"))
        return None
    if from_letter is not None and index is not None and from_letter != index:
        problems.append(Problem(row, "answer_index", f"{index} disagrees with answer "
                                                     f"{letter!r}"))
        return None
    chosen = index if index is not None else from_letter
    if n_options is not None and not 0 <= chosen < n_options:
        field = "answer_index" if index is not None else "answer"
        problems.append(Problem(row, field, f"points past the {n_options} options"))
        return None
    return chosen


def incorrect_options(options: list[str], answer_index: int) -> list[int]:
    """Indices of options usable as rejected: not the answer, not the answer's text, no repeats."""
    correct = options[answer_index].strip()
    seen, indices = {correct}, []
    for index, option in enumerate(options):
        text = option.strip()
        if index != answer_index and text and text not in seen:
            seen.add(text)
            indices.append(index)
    return indices


def format_mmlu_prompt(question: str, options: list[str]) -> str:
    """The pair prompt: the question, its options lettered ``A. ...``, then ``Answer:``."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"{LETTERS[index]}. {option}" for index, option in enumerate(options)]
    return "\n".join(lines + ["Answer:"])


def load_mmlu_pro(source: str | os.PathLike = DEFAULT_MMLU_PRO, split: str = "test"):
    """Load MMLU-Pro questions as a ``datasets.Dataset`` (:data:`QUESTION_COLUMNS`).

    ``source`` is a local file or ``TIGER-Lab/MMLU-Pro`` (then ``split`` is used). Schema
    problems raise ``DataFormatError`` naming file, row and field; rows with content
    problems are dropped with a warning.
    """
    return load_normalized(source, split, normalize_mmlu_pro, QUESTION_COLUMNS, "questions")


def rejected_indices(question: dict, mode: str, seed: int) -> list[int]:
    candidates = incorrect_options(question["options"], question["answer_index"])
    if mode == "all":
        return candidates
    # a per-question generator: the draw depends on (seed, question id) only, not row order
    return [random.Random(f"{seed}:{question['id']}").choice(candidates)]


def mmlu_pro_pairs(questions, mode: str = "sample", seed: int = 0):
    """Question rows (a Dataset or list of dicts) → pairs (:data:`MMLU_PAIR_COLUMNS`)."""
    if mode not in ("sample", "all"):
        raise ValueError(f"mode must be 'sample' or 'all', got {mode!r}")
    pairs = []
    for question in questions:
        prompt = format_mmlu_prompt(question["question"], question["options"])
        correct = question["options"][question["answer_index"]]
        for index in rejected_indices(question, mode, seed):
            pairs.append({"id": f"{question['id']}/{LETTERS[index]}",
                          "question_id": question["id"], "question": question["question"],
                          "prompt": prompt, "chosen": correct,
                          "rejected": question["options"][index],
                          "category": question["category"]})
    return to_dataset(pairs, MMLU_PAIR_COLUMNS)
