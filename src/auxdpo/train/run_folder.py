"""``auxdpo train``'s output folder: no silent overwrite, no empty folder after a failed start.

* :func:`check_run_folder`: a folder that holds anything (an earlier run, or other files) is
  refused before anything is loaded, unless the run resumes (``resume_from_checkpoint``) or
  ``overwrite_output_dir: true`` says to replace it. The two together are refused too: a
  resume keeps the folder, an overwrite empties it.
* :func:`clear_previous_run`: with ``overwrite_output_dir``, once the model, the data and the
  trainer's checks have passed, the files an earlier ``auxdpo train`` wrote there are removed
  (:data:`RUN_FILE_PATTERNS`: model or adapter, tokenizer, checkpoints, offsets, metrics,
  resolved config, model card, TensorBoard events); any other file stays, so a folder shared
  with your own files keeps them. Then a ``method: dpo`` run never leaves an earlier auxdpo
  run's offsets beside its model.
* :func:`failed_start_cleanup`: a run that fails before its first optimizer step (a bad row,
  a model that does not load, a bad key found by the trainer) removes what it created: the
  files it wrote and the folders it made, so no empty or half-made run folder is left and the
  fixed command can run into the same folder. A run that took a step keeps its files (a
  checkpoint to resume from, the metrics of what ran).

Under ``torchrun``/``accelerate launch`` rank 0 alone checks, clears and cleans (every rank
writes into the same folder; the launcher stops the others when rank 0 fails).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from auxdpo.locks import LOCK_NAME, check_not_in_use, is_rank_zero

__all__ = ["RUN_FILE_PATTERNS", "StartProgress", "check_run_folder", "clear_previous_run",
           "failed_start_cleanup", "folder_entries", "is_resuming", "run_files"]

logger = logging.getLogger(__name__)

# What `auxdpo train` writes into output_dir (transformers' save_pretrained for models,
# adapters and tokenizers, TRL's checkpoints, auxdpo's own files, TensorBoard's runs/).
RUN_FILE_PATTERNS = (
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
    "pytorch_model*.bin", "adapter_model.safetensors", "adapter_config.json", "config.json",
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "vocab.json", "vocab.txt", "merges.txt", "training_args.bin", "README.md",
    "aux_offsets.safetensors", "aux_offsets.json", "aux_deltas.safetensors",
    "aux_coverage.json", "auxdpo_config.yaml", "metrics.jsonl", "checkpoint-*", "runs",
    "trainer_state.json", "*_results.json",
)
_SHOWN = 4


def is_resuming(resume) -> bool:
    """Whether ``resume_from_checkpoint`` asks for a resume (True, "true" or a path)."""
    if resume is None or resume is False:
        return False
    return not (isinstance(resume, str) and resume.strip().lower() in ("", "false"))


def folder_entries(folder: str | os.PathLike) -> list[str]:
    """The names in ``folder`` (sorted), without the lock and its temporary files."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in names
                  if name != LOCK_NAME and not name.startswith(LOCK_NAME + "."))


def _shown(names: list[str]) -> str:
    more = f", ... ({len(names)} entries)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def check_run_folder(folder: str, *, resume, overwrite: bool) -> None:
    """Refuse a used ``folder`` (one line naming it and the two ways out); see the module."""
    if not is_rank_zero():
        return
    check_not_in_use(folder)  # a running command's folder: say so first
    if is_resuming(resume) and overwrite:
        raise ValueError(f"output_dir {folder}: overwrite_output_dir: true and "
                         "resume_from_checkpoint both set; a resume keeps the folder's run, "
                         "an overwrite removes it: set one")
    if is_resuming(resume) or overwrite:
        return
    entries = folder_entries(folder)
    if not entries:
        return
    what = ("holds an earlier run" if any(_is_run_file(name) for name in entries)
            else "is not empty")
    raise ValueError(f"output_dir {folder} {what} ({_shown(entries)}): resume it with "
                     "resume_from_checkpoint: true, or replace it with overwrite_output_dir: "
                     "true (removes the files auxdpo train writes; others stay), or pick "
                     "another output_dir")


def _is_run_file(name: str, metrics_file: str | None = None) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in RUN_FILE_PATTERNS) \
        or (metrics_file is not None and name == metrics_file)


def run_files(folder: str | os.PathLike, metrics_file: str | None = None) -> list[str]:
    """The entries of ``folder`` that an earlier ``auxdpo train`` wrote (sorted names)."""
    return [name for name in folder_entries(folder) if _is_run_file(name, metrics_file)]


def clear_previous_run(folder: str | os.PathLike, metrics_file: str | None = None) -> list[str]:
    """Remove the earlier run's files from ``folder`` (rank 0); return the names removed."""
    if not is_rank_zero():
        return []
    removed = run_files(folder, metrics_file)
    for name in removed:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if removed:
        kept = [name for name in folder_entries(folder) if name not in removed]
        logger.warning("overwrite_output_dir: removed the earlier run's %s from %s%s",
                       _shown(removed), folder,
                       f" (kept your other files: {_shown(kept)})" if kept else "")
    return removed


@dataclass
class StartProgress:
    """Set by the run: ``trainer`` once built (its ``state.global_step`` says whether a step
    was taken)."""

    trainer: object | None = None

    @property
    def started(self) -> bool:
        state = getattr(self.trainer, "state", None)
        return bool(getattr(state, "global_step", 0))


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


@contextlib.contextmanager
def failed_start_cleanup(folder: str | os.PathLike) -> Iterator[StartProgress]:
    """Inside the block the run may create ``folder`` and write into it; if the block fails
    before the run's first optimizer step, what it created is removed (rank 0)."""
    folder = Path(folder).absolute()
    created = _missing_parents(folder)
    before = set(folder_entries(folder))
    progress = StartProgress()
    try:
        yield progress
    except BaseException:
        if is_rank_zero() and not progress.started:
            _remove_new(folder, before, created)
        raise


def _remove_new(folder: Path, before: set[str], created: list[Path]) -> None:
    for name in folder_entries(folder):
        if name in before:
            continue
        path = folder / name
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for path in created:  # deepest first; a folder that holds anything stays
        with contextlib.suppress(OSError):
            path.rmdir()
