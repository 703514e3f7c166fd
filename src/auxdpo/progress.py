"""Progress bars for the long loops a person waits on (scoring, encoding), on stderr.

A bar shows only on an interactive terminal (tqdm's ``disable=None``), so logs, pipes and
tests stay clean; ``TQDM_DISABLE=1`` turns every bar off. Without tqdm installed (it comes
with the ``train`` extra) the loop runs unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

__all__ = ["is_main_process", "on_terminal", "progress"]


def is_main_process() -> bool:
    """False on every process but rank 0 of a multi-process launch (torchrun, accelerate),
    so that only one process prints progress and summaries."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def on_terminal(stream=None) -> bool:
    """True when ``stream`` (default stderr) is an interactive terminal."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(iterable: Iterable, *, desc: str | None = None, total: int | None = None,
             unit: str = "batch", enabled: bool | None = None, file=None) -> Iterable:
    """``iterable`` wrapped in a tqdm bar labelled ``desc``; None ``desc`` = no bar.

    ``enabled``: True forces the bar, False hides it, None (default) shows it on a terminal.
    """
    if desc is None or enabled is False:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
                disable=None if enabled is None else not enabled, file=file)
