"""Where a protocol output folder keeps its result files, and reading one back.

``OUT/runs/<run_id>.json`` holds one finished run, ``OUT/base/<dataset>.json`` the base
model's scores on a data set (the full layout: :mod:`auxdpo.harness.protocol.runner`). A file is
finished when it exists and parses: the runner writes them atomically, skips the finished
ones on resume, and :mod:`auxdpo.harness.protocol.results` reads them into tables and figures.
"""

from __future__ import annotations

import json
import os

from auxdpo.harness.protocol.recipe import RunSpec

__all__ = ["base_path", "read_result", "result_path"]


def result_path(out_dir: str, run: RunSpec) -> str:
    """``OUT/runs/<run_id>.json``."""
    return os.path.join(out_dir, "runs", f"{run.run_id}.json")


def base_path(out_dir: str, dataset: str) -> str:
    """``OUT/base/<dataset>.json``."""
    return os.path.join(out_dir, "base", f"{dataset}.json")


def read_result(path: str) -> dict | None:
    """The parsed result file, or None when it is missing or unreadable (then: not finished)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and "metrics" in data else None
