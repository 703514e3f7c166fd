"""Saving and loading AuxDPO's offset state without pickle.

A state dict (nested dicts of tensors, numbers, strings, lists) is split in two files:
tensors in ``<stem>.safetensors`` under flattened keys (``a/b/c``), everything else in
``<stem>.json``. Loading reads safetensors and JSON only, so no untrusted pickle is ever run.
Both files are written atomically (temporary file, then ``os.replace``), with the mode the
umask gives a new file.

Trainer checkpoints (``checkpoint-<step>/``) are complete when they hold
:data:`COMPLETE_MARKER`, written after every other file of the checkpoint: a run killed while
saving leaves a folder without it, which :func:`resolve_resume` never picks. A save that fails
for want of space (``OSError`` ENOSPC, or the ``RuntimeError`` torch's zip writer raises,
``inline_container.cc``) becomes one line naming the file (:func:`disk_full_named`); the
incomplete checkpoint is removed, and the run resumes from the last complete one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from auxdpo.errors import AuxdpoError
from auxdpo.files import atomic_write_text, honour_umask, publish

__all__ = ["COMPLETE_MARKER", "NEVER_LOADED", "OFFSETS_STEM", "DiskFullError",
           "atomic_write_text", "complete_checkpoints", "disk_full_named", "honour_umask",
           "load_state", "pickles_refused_by_name", "resolve_resume", "save_checkpoint_marked",
           "save_state", "without_tied_keys"]

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "auxdpo-checkpoint-complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


OFFSETS_STEM = "aux_offsets"
_SEP = "/"


def _split(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of ``state`` into ``tensors``; return the JSON-able remainder."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        for key in state:
            if not isinstance(key, (str, int)) or _SEP in str(key):
                raise ValueError(f"state key {key!r} at {prefix!r} must be a str/int without "
                                 f"{_SEP!r}")
        return {"__dict__": [[key, _split(value, f"{prefix}{_SEP}{key}", tensors)]
                             for key, value in state.items()]}
    if isinstance(state, (list, tuple)):
        return [_split(value, f"{prefix}{_SEP}{i}", tensors) for i, value in enumerate(state)]
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise ValueError(f"state entry {prefix!r} has unsupported type {type(state).__name__}")


def _join(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict) and "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if isinstance(node, dict) and "__dict__" in node:
        return {key: _join(value, tensors) for key, value in node["__dict__"]}
    if isinstance(node, list):
        return [_join(value, tensors) for value in node]
    return node


def save_state(state: dict, folder: Path | str, stem: str = OFFSETS_STEM) -> list[Path]:
    """Write ``state`` as ``folder/stem.safetensors`` + ``folder/stem.json``; return the paths."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "", tensors)
    tensor_path, json_path = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        publish(tmp, tensor_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(json_path, json.dumps(skeleton, indent=1))
    return [tensor_path, json_path]


def load_state(folder: Path | str, stem: str = OFFSETS_STEM) -> dict | None:
    """Inverse of :func:`save_state`; ``None`` when the folder holds no such state."""
    from safetensors.torch import load_file

    folder = Path(folder)
    json_path = folder / f"{stem}.json"
    if not json_path.exists():
        return None
    skeleton = json.loads(json_path.read_text(encoding="utf-8"))
    tensor_path = folder / f"{stem}.safetensors"
    tensors = load_file(str(tensor_path)) if tensor_path.exists() else {}
    return _join(skeleton, tensors)


# ---- trainer checkpoints ----------------------------------------------------------------------

def _checkpoints(output_dir: Path | str) -> list[tuple[int, Path]]:
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in folder.iterdir()
             if (m := _CHECKPOINT.match(path.name)) and path.is_dir()]
    return sorted(found)


def complete_checkpoints(output_dir: Path | str) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders of ``output_dir``, oldest first."""
    return [path for _, path in _checkpoints(output_dir) if (path / COMPLETE_MARKER).is_file()]


def resolve_resume(output_dir: str, resume) -> str | None:
    """The checkpoint a run resumes from: ``True`` (or "true") → the newest *complete* one;
    a path → that folder, which must be complete; None/False → none."""
    if resume is None or resume is False or (isinstance(resume, str) and
                                             resume.lower() in ("", "false")):
        return None
    if resume is True or (isinstance(resume, str) and resume.lower() == "true"):
        complete = complete_checkpoints(output_dir)
        newer = [path.name for step, path in _checkpoints(output_dir)
                 if not (path / COMPLETE_MARKER).is_file()
                 and (not complete or step > int(complete[-1].name.split("-")[1]))]
        if not complete:
            reason = (f" ({', '.join(newer)} incomplete: a run was stopped while saving)"
                      if newer else "")
            raise ValueError(f"resume_from_checkpoint: no complete checkpoint in "
                             f"{output_dir}{reason}")
        if newer:
            logger.warning("resume: skipping incomplete %s (a run was stopped while saving); "
                           "resuming from %s", ", ".join(newer), complete[-1].name)
        return str(complete[-1])
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: {resume} is not a folder")
    if not (path / COMPLETE_MARKER).is_file():
        raise ValueError(f"resume_from_checkpoint: {resume} is incomplete (no {COMPLETE_MARKER}:"
                         " its run was stopped while saving it, or it predates the marker)")
    return str(path)


def save_checkpoint_marked(trainer, save, model, trial) -> None:
    """Run the Trainer's ``save(model, trial)``, then write the completion marker; old
    checkpoints are rotated only after it (so the limit never deletes the last complete one),
    and incomplete folders of earlier steps, which no resume can use, are removed. A save
    that runs out of space removes its incomplete folder and raises :class:`DiskFullError`."""
    step = trainer.state.global_step
    run_dir = Path(trainer._get_output_dir(trial=trial))
    target = run_dir / f"checkpoint-{step}"
    if trainer.args.should_save:  # a re-save of this step (a resume) is incomplete until done
        (target / COMPLETE_MARKER).unlink(missing_ok=True)
    limit = trainer.args.save_total_limit
    trainer.args.save_total_limit = None
    try:
        with disk_full_named(target, run_dir, remove_partial=trainer.args.should_save):
            save(model, trial)
    finally:
        trainer.args.save_total_limit = limit
    if not trainer.args.should_save:
        return
    from transformers.trainer_utils import rotate_checkpoints

    atomic_write_text(target / COMPLETE_MARKER, json.dumps({"global_step": step}) + "\n")
    for earlier, path in _checkpoints(run_dir):
        if earlier < step and not (path / COMPLETE_MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
    rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                       best_model_checkpoint=trainer.state.best_model_checkpoint,
                       use_mtime=False)


class DiskFullError(AuxdpoError, OSError):
    """A save ran out of space; the message names the file and how to go on."""


# What torch's zip writer (c10's inline_container.cc) says when a write fails.
_TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    return isinstance(exc, RuntimeError) and any(text in str(exc)
                                                 for text in _TORCH_WRITE_FAILURES)


def _file_being_written(exc: BaseException, folder: Path) -> Path | None:
    """The file the failed write was for: the OSError's own filename, else the innermost
    frame's path-valued local inside ``folder`` (torch.save's ``f``, safetensors' ``filename``)."""
    folder = folder.absolute()
    named = getattr(exc, "filename", None)
    candidates = [named] if named else []
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        candidates += [value for value in frame.f_locals.values()
                       if isinstance(value, (str, os.PathLike))]
    inside = []
    for value in candidates:
        try:
            path = Path(os.fspath(value)).absolute()
        except (TypeError, ValueError):
            continue
        if path != folder and folder in path.parents:
            inside.append(path)
    # an atomic writer's temporary file (".name.xyz.tmp") stands for the file it replaces
    named = [path for path in inside if not path.name.startswith(".")]
    return (named or inside or [None])[0]


@contextlib.contextmanager
def disk_full_named(path: Path | str, run_dir: Path | str | None = None, *,
                    remove_partial: bool = False):
    """Turn a write that fails for want of space inside the block into one line naming the
    file (or ``path``) and what to do; with ``remove_partial``, ``path`` (an incomplete
    checkpoint folder) is removed first. Other errors pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if not _is_write_failure(exc):
            raise
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        written = _file_being_written(exc, folder) or path
        detail = (os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else
                  " ".join(str(exc).split())[:160])
        removed = ""
        if remove_partial and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed = f"; removed the incomplete {path.name}"
        complete = complete_checkpoints(run_dir) if run_dir is not None else []
        then = (f"then resume with resume_from_checkpoint: true (from {complete[-1].name})"
                if complete else "then run again")
        raise DiskFullError(f"disk full while writing {written} ({detail}){removed}; free "
                            f"space, {then}") from None


def _unsafe_globals(path: Path) -> list[str]:
    """Globals of a pickled file that transformers' allow-list (numpy RNG state) does not
    cover, read without running the pickle."""
    from transformers.trainer_pt_utils import safe_globals

    try:
        with safe_globals():
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - unreadable: not the file that was refused
        return []


# Pickled files of a checkpoint that a resume never loads (transformers writes the
# TrainingArguments for reference only): they hold auxdpo's config class, not a refusal's cause.
NEVER_LOADED = ("training_args.bin",)


@contextlib.contextmanager
def pickles_refused_by_name(checkpoint: str | None):
    """Turn the refusal of a checkpoint's pickled file (optimizer, scheduler, RNG state: loaded
    by transformers with ``weights_only``) into a one-line ValueError naming the file."""
    try:
        yield
    except pickle.UnpicklingError as exc:
        if checkpoint is None:
            raise
        files = sorted(p for p in Path(checkpoint).iterdir()
                       if p.suffix in (".pt", ".pth", ".bin") and p.name not in NEVER_LOADED)
        culprits = [f"{p.name} ({', '.join(g)})" for p in files if (g := _unsafe_globals(p))]
        named = ", ".join(culprits) or ", ".join(p.name for p in files)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
        raise ValueError(f"checkpoint {checkpoint}: refused to load pickled file(s) {named}: "
                         f"{first}") from None


def without_tied_keys(model, load_result):
    """``load_result`` (missing and unexpected keys of a checkpoint's model weights) without
    the missing keys whose parameter is tied to one that was loaded: ``lm_head.weight`` of a
    model with tied embeddings is saved once, as the input embeddings, and comes back with
    them, so transformers' "missing keys ... lm_head.weight" on every resume names nothing
    missing. Ties are read from the model (parameters that are one tensor)."""
    missing = list(getattr(load_result, "missing_keys", []) or [])
    if not missing:
        return load_result
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    loaded_with = {name: [other for other in names if other != name]
                   for names in groups.values() if len(names) > 1 for name in names}
    kept = [key for key in missing
            if not any(other not in missing for other in loaded_with.get(key, []))]
    if len(kept) == len(missing):
        return load_result
    if hasattr(load_result, "_replace"):
        return load_result._replace(missing_keys=kept)
    load_result.missing_keys = kept
    return load_result
