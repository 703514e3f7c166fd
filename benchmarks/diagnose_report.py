"""What the two `auxdpo diagnose` oracle benchmarks (diagnose_oracle.py,
diagnose_linearisation.py) share: merging earlier ``--json`` files and writing a run's result."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

__all__ = ["finish", "merged"]


def merged(paths: Sequence[str], summarise: Callable[[list[dict]], dict]) -> dict:
    """The points of earlier ``--json`` files, pooled, with their summary."""
    points: list[dict] = []
    for path in paths:
        with open(path) as handle:
            points += json.load(handle)["points"]
    return {"points": points, "summary": summarise(points)}


def finish(result: dict, started: float, print_summary: Callable[[dict], None],
           json_path: str | None) -> None:
    """Print the summary and the run time; write ``result`` to ``json_path`` if given."""
    result["seconds"] = time.time() - started
    print_summary(result)
    print(f"({result['seconds']:.0f} s)")
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(result, handle, indent=1)
