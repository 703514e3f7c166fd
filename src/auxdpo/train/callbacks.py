"""The trainer's JSONL metrics file (:class:`JsonlMetricsCallback`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

__all__ = ["JsonlMetricsCallback"]


class JsonlMetricsCallback(TrainerCallback):
    """Append each logging event as one JSON line ``{"step": .., **logs}`` to a file.

    Lines are appended and flushed one at a time (a killed run keeps every finished line);
    non-finite numbers are written as null so that every line is valid JSON. At the start of
    training the file keeps only the lines of steps already done (none for a fresh run, those
    up to the checkpoint's step on resume), so no step appears twice.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return control
        from auxdpo.files import atomic_write_text

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                step = json.loads(line).get("step")
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut short by a kill
            if isinstance(step, int) and 0 < state.global_step and step <= state.global_step:
                kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return control
        record = {"step": state.global_step, "epoch": state.epoch}
        for key, value in logs.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        return control
