"""Reading raw rows and reporting what is wrong with them.

Every loader in :mod:`auxdpo.data` works in two steps: read the file into a list of plain
dicts (:func:`read_records`), then normalise each row, collecting :class:`Problem` records
instead of stopping at the first one. ``auxdpo data check`` prints all problems; the loaders
raise :class:`DataFormatError` on schema problems and drop rows with content problems.

Row numbers are 1-based: row N is the N-th record of a ``.json`` list or ``.parquet`` file,
and line N of a ``.jsonl`` file (blank lines are skipped but still counted).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DataFormatError",
    "Problem",
    "load_normalized",
    "normalize_records",
    "read_records",
    "is_local_path",
    "require_text",
    "require_list",
    "split_conversation",
    "raise_on_schema_problems",
    "records_from_source",
    "DATA_DIR_ENV",
    "default_source",
    "local_data_path",
    "to_dataset",
]

# A folder of local copies of the data sets (same layout as the hub files; docs/data.md).
DATA_DIR_ENV = "AUXDPO_DATA_DIR"

# Problem kinds: "schema" = a field is missing or has the wrong type (the file is not in the
# format it claims); "content" = the row parses but is no usable preference (e.g. chosen ==
# rejected). Loaders raise on the first kind and drop rows of the second.
SCHEMA, CONTENT = "schema", "content"
_EXTENSIONS = (".json", ".jsonl", ".parquet")


class DataFormatError(ValueError):
    """A file does not match the schema it was loaded as; the message names file, row, field."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row: ``row`` (1-based), ``field``, ``message``, ``kind``."""

    row: int
    field: str
    message: str
    kind: str = SCHEMA

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``auxdpo data check --json`` (row, field, message only)."""
        return {"row": self.row, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"row {self.row}, field '{self.field}': {self.message}"


def is_local_path(source: str | os.PathLike) -> bool:
    """True when ``source`` names an existing file (else it is taken for a hub data set name)."""
    return os.path.isfile(os.fspath(source))


def local_data_path(relative: str) -> str:
    """``$AUXDPO_DATA_DIR/<relative>``, or ``<relative>`` under the placeholder
    ``$AUXDPO_DATA_DIR`` when the variable is unset (such a path does not exist, so a reader
    fails naming the variable)."""
    return os.path.join(os.environ.get(DATA_DIR_ENV) or f"${DATA_DIR_ENV}", relative)


def default_source(relative: str, hub_name: str) -> str:
    """A loader's default source: the local copy ``$AUXDPO_DATA_DIR/<relative>`` when the
    environment variable ``AUXDPO_DATA_DIR`` names a folder of local copies, else the hub
    data set ``hub_name``."""
    return local_data_path(relative) if os.environ.get(DATA_DIR_ENV) else hub_name


def records_from_source(source: str | os.PathLike, split: str, config: str | None = None
                        ) -> tuple[str, list[tuple[int, Any]], list[Problem]]:
    """Rows of a local file, or of a hub data set (``datasets.load_dataset(source, split)``,
    with the configuration name ``config`` when one is given).

    Returns ``(label, [(row_number, record)], problems)``; ``label`` names the source in errors.
    """
    if is_local_path(source) or os.path.splitext(os.fspath(source))[1].lower() in _EXTENSIONS:
        records, problems = read_records(source)
        return os.fspath(source), records, problems
    import datasets

    hub = (datasets.load_dataset(os.fspath(source), split=split) if config is None else
           datasets.load_dataset(os.fspath(source), config, split=split))
    return f"{source}[{split}]", list(enumerate(hub, start=1)), []


def to_dataset(rows: list[dict], columns: tuple[str, ...]):
    """A ``datasets.Dataset`` with exactly ``columns`` (kept even when ``rows`` is empty)."""
    import datasets

    return datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in columns})


def read_records(path: str | os.PathLike) -> tuple[list[tuple[int, Any]], list[Problem]]:
    """Read ``.json`` (a list), ``.jsonl`` or ``.parquet`` into ``[(row_number, record)]``.

    Lines of a ``.jsonl`` file that are not valid JSON become problems (field ``<json>``)
    rather than errors, so one bad line does not hide the others.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    lower = path.lower()
    if lower.endswith(".jsonl"):
        return _read_jsonl(path)
    if lower.endswith(".json"):
        with open(path, "rb") as handle:
            raw = handle.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise DataFormatError(f"{path}: line {line} is not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"train": [...]} style wrappers
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: a .json file must hold a list of rows")
        return list(enumerate(data, start=1)), []
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return list(enumerate(table.to_pylist(), start=1)), []
    raise DataFormatError(f"{path}: unknown extension (expected .json, .jsonl or .parquet)")


def _read_jsonl(path: str) -> tuple[list[tuple[int, Any]], list[Problem]]:
    records: list[tuple[int, Any]] = []
    problems: list[Problem] = []
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(Problem(line_number, "<utf-8>", f"not valid UTF-8 (byte "
                                                                f"{exc.start + 1} of the line)"))
                continue
            if not line.strip():
                continue
            try:
                records.append((line_number, json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(Problem(line_number, "<json>", f"not valid JSON: {exc.msg}"))
    return records, problems


def require_text(row: int, record: dict, field: str, problems: list[Problem]) -> str | None:
    """The string in ``record[field]``, or None after recording why it is unusable."""
    if field not in record or record[field] is None:
        problems.append(Problem(row, field, "missing"))
        return None
    value = record[field]
    if not isinstance(value, str):
        problems.append(Problem(row, field, f"expected a string, got {type(value).__name__}"))
        return None
    if not value.strip():
        problems.append(Problem(row, field, "empty string", CONTENT))
        return None
    return value


def require_list(row: int, record: dict, field: str, problems: list[Problem]) -> list | None:
    """The non-empty list in ``record[field]``, or None after recording why it is unusable."""
    if field not in record or record[field] is None:
        problems.append(Problem(row, field, "missing"))
        return None
    value = record[field]
    if not isinstance(value, (list, tuple)):
        problems.append(Problem(row, field, f"expected a list, got {type(value).__name__}"))
        return None
    if len(value) == 0:
        problems.append(Problem(row, field, "empty list", CONTENT))
        return None
    return list(value)


def split_conversation(row: int, field: str, messages: Any,
                       problems: list[Problem]) -> tuple[str, str] | None:
    """``[{role, content}, ...]`` ending in an assistant turn → (user prompt, assistant reply).

    The prompt is the single user turn before the reply; a system turn before it is allowed
    and dropped. Multi-turn conversations are reported, not guessed at.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        problems.append(Problem(row, field, "expected a non-empty list of {role, content} messages"))
        return None
    for turn in messages:
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) \
                or not isinstance(turn.get("role"), str):
            problems.append(Problem(row, field, "every message needs string 'role' and 'content'"))
            return None
    if messages[-1]["role"] != "assistant":
        problems.append(Problem(row, field, "last message is not from the assistant"))
        return None
    before = [turn for turn in messages[:-1] if turn["role"] != "system"]
    if len(before) != 1 or before[0]["role"] != "user":
        problems.append(Problem(row, field, f"expected one user turn before the reply, "
                                            f"found {len(before)} turns (multi-turn unsupported)"))
        return None
    return before[0]["content"], messages[-1]["content"]


def raise_on_schema_problems(source: str, problems: list[Problem], limit: int = 5) -> None:
    """Raise :class:`DataFormatError` naming the file and the first ``limit`` schema problems."""
    schema = [problem for problem in problems if problem.kind == SCHEMA]
    if not schema:
        return
    shown = "; ".join(str(problem) for problem in schema[:limit])
    more = f" (and {len(schema) - limit} more)" if len(schema) > limit else ""
    raise DataFormatError(f"{source}: {shown}{more}")


def normalize_records(records: list[tuple[int, Any]], normalize_row
                      ) -> tuple[list[dict], list[Problem]]:
    """Apply ``normalize_row(row, record, problems) -> dict | None`` to every object row.

    A row that is not an object, or whose normalisation reports any problem, yields nothing.
    """
    items: list[dict] = []
    problems: list[Problem] = []
    for row, record in records:
        if not isinstance(record, dict):
            problems.append(Problem(row, "<row>", f"expected an object, got {type(record).__name__}"))
            continue
        found: list[Problem] = []
        item = normalize_row(row, record, found)
        problems.extend(found)
        if item is not None and not found:
            items.append(item)
    return items, problems


def load_normalized(source: str | os.PathLike, split: str, normalize, columns: tuple[str, ...],
                    what: str):
    """Read ``source``, normalise its rows, raise on schema problems, warn on dropped rows,
    and return a ``datasets.Dataset`` with ``columns`` (an error when no row is usable)."""
    import warnings

    label, records, problems = records_from_source(source, split)
    items, row_problems = normalize(records)
    problems += row_problems
    raise_on_schema_problems(label, problems)
    if problems:
        dropped = len({problem.row for problem in problems})
        warnings.warn(f"{label}: dropped {dropped} unusable rows (first: {problems[0]})",
                      stacklevel=3)
    if not items:
        raise ValueError(f"{label}: no usable {what}")
    return to_dataset(items, columns)
