"""Saving and loading AuxDPO's offset state without pickle.

A state dict (nested dicts of tensors, numbers, strings, lists) is split in two files:
tensors in ``<stem>.safetensors`` under flattened keys (``a/b/c``), everything else in
``<stem>.json``. Loading reads safetensors and JSON only, so no untrusted pickle is ever run.
Both files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["OFFSETS_STEM", "atomic_write_text", "load_state", "save_state"]

OFFSETS_STEM = "aux_offsets"
_SEP = "/"


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        os.replace(tmp, tensor_path)
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
