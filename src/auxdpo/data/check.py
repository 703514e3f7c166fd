"""``auxdpo data check``'s engine: read a file in a named format and list every problem.

Counts reported: ``rows`` (records read, unparseable lines included), ``pairs`` (preference
pairs the usable rows yield under each format's default: UltraFeedback one per row,
RewardBench 2 every chosen × rejected, MMLU-Pro one sampled incorrect option per question)
and ``problems`` (row, field, message; row 0 means the file as a whole).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from auxdpo.data.schema import DataFormatError, Problem, read_records

__all__ = ["FORMATS", "CheckReport", "check_file"]

FORMATS = ("ultrafeedback", "rewardbench2", "mmlu-pro")


@dataclass
class CheckReport:
    """What ``auxdpo data check`` found in one file."""

    path: str
    format: str
    rows: int
    pairs: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row is usable."""
        return not self.problems

    def as_dict(self) -> dict:
        """``{"rows", "pairs", "problems": [{"row", "field", "message"}]}`` — exactly these keys."""
        return {"rows": self.rows, "pairs": self.pairs,
                "problems": [problem.as_dict() for problem in self.problems]}

    def as_text(self) -> str:
        """The human-readable report: a header, then one line per problem."""
        lines = [f"file: {self.path}", f"format: {self.format}", f"rows: {self.rows}",
                 f"pairs: {self.pairs}", f"problems: {len(self.problems)}"]
        lines += [f"  {problem}" for problem in self.problems]
        lines.append("status: ok" if self.ok else "status: UNUSABLE ROWS FOUND")
        return "\n".join(lines)


def _count_pairs(fmt: str, records: list) -> tuple[int, list[Problem]]:
    if fmt == "ultrafeedback":
        from auxdpo.data.ultrafeedback import normalize_ultrafeedback

        pairs, problems = normalize_ultrafeedback(records)
        return len(pairs), problems
    if fmt == "rewardbench2":
        from auxdpo.data.rewardbench2 import count_rewardbench2_pairs, normalize_rewardbench2

        items, problems = normalize_rewardbench2(records)
        return count_rewardbench2_pairs(items, "all"), problems
    from auxdpo.data.mmlu_pro import normalize_mmlu_pro

    questions, problems = normalize_mmlu_pro(records)
    return len(questions), problems


def check_file(path: str | os.PathLike, fmt: str) -> CheckReport:
    """Validate ``path`` as ``fmt`` (one of :data:`FORMATS`); never raises on bad rows.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unknown format.
    A file that cannot be parsed at all is reported as one problem on row 0.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    path = os.fspath(path)
    try:
        records, problems = read_records(path)
    except DataFormatError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        return CheckReport(path, fmt, 0, 0, [Problem(0, "<file>", message)])
    pairs, row_problems = _count_pairs(fmt, records)
    if not records and not problems:
        row_problems.append(Problem(0, "<file>", "no rows"))
    problems = sorted(problems + row_problems, key=lambda problem: problem.row)
    return CheckReport(path, fmt, len(records) + sum(p.field in ("<json>", "<utf-8>") for p in problems),
                       pairs, problems)
