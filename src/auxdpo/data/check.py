"""``auxdpo data check``'s engine: read a file in a named format and list every problem.

Counts reported: ``rows`` (records read, unparseable lines included), ``pairs`` (preference
pairs the usable rows yield under each format's default: UltraFeedback one per row,
RewardBench 2 every chosen × rejected, MMLU-Pro one sampled incorrect option per question,
the multi-comparison formats every pair under the expansion options), how those pairs share
their responses (:mod:`auxdpo.data.stats`), ``problems`` (row, field, message; row 0 means
the file as a whole) and the ``verdict``: what AuxDPO will do with such pairs
(:func:`~auxdpo.data.stats.aux_verdict`). The source is a local file or, like
``dataset_name`` of ``auxdpo train``, a hub data set name (``datasets.load_dataset``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from auxdpo.data.schema import CONTENT, DataFormatError, Problem, records_from_source
from auxdpo.data.stats import ComparisonStats, aux_verdict, comparison_stats

__all__ = ["FORMATS", "PAIRWISE_FORMATS", "CheckReport", "check_file"]

PAIRWISE_FORMATS = ("ultrafeedback", "rewardbench2", "mmlu-pro")
# the multi-comparison formats of auxdpo.data.comparisons (kept literal: no import cost here)
FORMATS = PAIRWISE_FORMATS + ("rlhflow-ultrafeedback", "openbmb-ultrafeedback",
                              "scored-responses")
_NO_PAIRS = ComparisonStats(0, 0, 0.0, 0.0, 0.0)
# Which command loads each format (and so drops its rows with content problems).
_LOADER = {"rewardbench2": "auxdpo eval", "mmlu-pro": "auxdpo eval"}


@dataclass
class CheckReport:
    """What ``auxdpo data check`` found in one file."""

    path: str
    format: str
    rows: int
    pairs: int
    problems: list[Problem] = field(default_factory=list)
    stats: ComparisonStats = _NO_PAIRS

    @property
    def ok(self) -> bool:
        """True when every row is usable."""
        return not self.problems

    @property
    def verdict(self) -> str:
        """What AuxDPO will do with these pairs (:func:`~auxdpo.data.stats.aux_verdict`)."""
        return aux_verdict(self.stats)

    def loading_note(self) -> str | None:
        """What loading the source does with its problem rows: rows with content problems
        are dropped with a warning, schema problems stop the loader."""
        if not self.problems:
            return None
        content = len({p.row for p in self.problems if p.kind == CONTENT})
        schema = len({p.row for p in self.problems if p.kind != CONTENT})
        loader = _LOADER.get(self.format, f"auxdpo train with dataset_format: {self.format}")
        parts = [f"drops the {content} row(s) with content problems (or their responses), "
                 "with a warning"] if content else []
        parts += [f"stops at the {schema} row(s) with schema problems"] if schema else []
        return f"loading: {loader} {' and '.join(parts)}"

    def as_dict(self) -> dict:
        """``{"rows", "pairs", "prompts", "responses", "responses_per_prompt",
        "pairs_per_response", "share_in_2_or_more", "problems": [{"row", "field",
        "message"}], "verdict"}`` — exactly these keys."""
        return {"rows": self.rows, "pairs": self.pairs, **self.stats.as_dict(),
                "problems": [problem.as_dict() for problem in self.problems],
                "verdict": self.verdict}

    def as_text(self) -> str:
        """The human-readable report: a header, one line per problem, the status and the
        verdict."""
        where = "file" if os.path.isfile(self.path) or self.rows == 0 else "hub data set"
        lines = [f"{where}: {self.path}", f"format: {self.format}", f"rows: {self.rows}",
                 f"pairs: {self.pairs}", *self.stats.as_lines(),
                 f"problems: {len(self.problems)}"]
        lines += [f"  {problem}" for problem in self.problems]
        note = self.loading_note()
        lines += [note] if note else []
        lines.append("status: ok" if self.ok else "status: UNUSABLE ROWS FOUND")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def _pair_texts(fmt: str, records: list, options) -> tuple[list[tuple], list[Problem]]:
    """The (prompt, chosen, rejected) texts of the pairs the usable rows yield, and problems."""
    if fmt == "ultrafeedback":
        from auxdpo.data.ultrafeedback import normalize_ultrafeedback

        pairs, problems = normalize_ultrafeedback(records)
        return [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs], problems
    if fmt == "rewardbench2":
        from auxdpo.data.rewardbench2 import normalize_rewardbench2

        items, problems = normalize_rewardbench2(records)
        return [(item["prompt"], good, bad) for item in items for good in item["chosen"]
                for bad in item["rejected"]], problems
    if fmt == "mmlu-pro":
        from auxdpo.data.mmlu_pro import format_mmlu_prompt, normalize_mmlu_pro, rejected_indices

        questions, problems = normalize_mmlu_pro(records)
        texts = []
        for question in questions:  # the loader's default pairs: mode "sample", seed 0
            prompt = format_mmlu_prompt(question["question"], question["options"])
            correct = question["options"][question["answer_index"]]
            texts += [(prompt, correct, question["options"][index])
                      for index in rejected_indices(question, "sample", 0)]
        return texts, problems
    from auxdpo.data.comparisons import normalize_comparisons

    pairs, problems = normalize_comparisons(fmt, records, options)
    return [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs], problems


def check_file(path: str | os.PathLike, fmt: str, options=None, *, split: str | None = None,
               config: str | None = None) -> CheckReport:
    """Validate ``path`` as ``fmt`` (one of :data:`FORMATS`); never raises on bad rows.

    ``path`` is a local file (.json, .jsonl, .parquet) or a hub data set name, loaded with
    ``datasets.load_dataset(path, config, split=split)`` as ``auxdpo train`` loads
    ``dataset_name`` (``split`` default: ``train``, ``train_prefs`` for
    HuggingFaceH4/ultrafeedback_binarized). ``options``
    (:class:`~auxdpo.data.comparisons.ExpansionOptions`) applies to the multi-comparison
    formats: the tie rule changes the pair count.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unknown format.
    A file that cannot be parsed at all is reported as one problem on row 0.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    path = os.fspath(path)
    if split is None:
        from auxdpo.data.ultrafeedback import hub_split

        split = hub_split(path)
    try:
        label, records, problems = records_from_source(path, split, config)
    except DataFormatError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        return CheckReport(path, fmt, 0, 0, [Problem(0, "<file>", message)])
    path = label
    texts, row_problems = _pair_texts(fmt, records, options)
    if not records and not problems:
        row_problems.append(Problem(0, "<file>", "no rows"))
    problems = sorted(problems + row_problems, key=lambda problem: problem.row)
    return CheckReport(path, fmt, len(records) + sum(p.field in ("<json>", "<utf-8>")
                                                     for p in problems),
                       len(texts), problems, comparison_stats(texts))
