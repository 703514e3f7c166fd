"""One writer per output folder: ``train``, ``protocol run``, ``oracle --out``, ``oracle-grid``.

:func:`output_folder` checks that the folder can be one (not a file, writable), creates it and
holds ``<folder>/.auxdpo.lock`` while the command runs. The lock file is JSON ``{pid, host,
command, started}``; it is written to a private temporary file and hard-linked into place, so
it appears complete or not at all and two writers can never both create it (``link`` fails
when the name exists, like ``O_EXCL``). A second writer gets :class:`FolderInUseError`
(one line, exit code 2). A lock left by a process that no longer runs on this host is stale:
it is taken over with a warning. A lock of another host cannot be checked and is never taken
over; the message says which file to delete once that run is known to be gone.

Under ``torchrun`` only global rank 0 locks (every rank writes into the same folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator

from auxdpo.errors import AuxdpoError

__all__ = ["LOCK_NAME", "FolderInUseError", "acquire_lock", "check_not_in_use", "is_rank_zero",
           "output_folder", "prepare_output_folder", "release_lock"]

LOCK_NAME = ".auxdpo.lock"


class FolderInUseError(AuxdpoError):
    """Another running command holds the output folder's lock."""


def prepare_output_folder(path: str | os.PathLike, what: str = "output folder") -> str:
    """Create ``path`` (and parents); ValueError when it is a file or cannot be written."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{what} {path}: a parent of it is a file") from None
    except PermissionError:
        raise ValueError(f"{what} {path} cannot be created (permission denied)") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} is not writable")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(lock: str) -> dict | None:
    try:
        with open(lock, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(info: dict) -> str:
    return (f"{info.get('command', 'a command')} (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}, since {info.get('started', '?')})")


def acquire_lock(folder: str, command: str, *, stacklevel: int = 2) -> str:
    """Create the lock of ``folder`` (which must exist) for ``command``; return its path.

    Taking over a stale lock warns; ``stacklevel`` points the warning at the caller's line
    (2: the caller of this function)."""
    lock = os.path.join(folder, LOCK_NAME)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".auxdpo.lock.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(info, handle)
        for _ in range(5):
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system: exclusive create instead
                with contextlib.suppress(FileExistsError):
                    with open(lock, "x", encoding="utf-8") as handle:
                        json.dump(info, handle)
                    return lock
            held = _read(lock)
            if held is None:
                continue  # released meanwhile: try again
            same_host = held.get("host") == info["host"]
            pid = held.get("pid")
            if held and not (same_host and isinstance(pid, int) and not _alive(pid)):
                hint = "" if same_host else \
                    f"; if that run is gone, delete {lock}"
                raise FolderInUseError(f"{folder} is in use by {_holder(held)}{hint}")
            # Stale (its process is gone) or unreadable: move it aside under a name of our own
            # (a rename only one taker can win), check that what moved is the stale lock we
            # read, and go back to the exclusive link.
            claim = f"{lock}.{info['pid']}.stale"
            try:
                os.rename(lock, claim)
            except FileNotFoundError:
                continue
            moved = _read(claim)
            if moved != held:  # a live lock appeared in between: put it back
                with contextlib.suppress(FileExistsError):
                    os.link(claim, lock)
                os.unlink(claim)
                raise FolderInUseError(f"{folder} is in use by {_holder(moved or {})}")
            os.unlink(claim)
            warnings.warn(f"{folder}: took over the stale lock of {_holder(held)} "
                          "(that process is gone)", UserWarning, stacklevel=stacklevel)
        raise FolderInUseError(f"{folder}: could not take its lock {lock}")
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def check_not_in_use(folder: str | os.PathLike) -> None:
    """Raise :class:`FolderInUseError` when a live process of this host (or any process of
    another host) holds ``folder``'s lock; read-only, so a command can say so before its
    other checks. Taking the lock (:func:`acquire_lock`) stays the real exclusion."""
    folder = os.fspath(folder)
    held = _read(os.path.join(folder, LOCK_NAME))
    if not held:
        return
    same_host = held.get("host") == socket.gethostname()
    pid = held.get("pid")
    if same_host and isinstance(pid, int) and not _alive(pid):
        return  # stale: taken over when the command locks
    hint = "" if same_host else f"; if that run is gone, delete {os.path.join(folder, LOCK_NAME)}"
    raise FolderInUseError(f"{folder} is in use by {_holder(held)}{hint}")


def release_lock(lock: str) -> None:
    """Remove ``lock`` if this process still holds it."""
    held = _read(lock)
    if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (or the only process)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, command: str) -> Iterator[str]:
    """Prepare ``path`` (:func:`prepare_output_folder`) and hold its lock inside the block."""
    folder = prepare_output_folder(path)
    # a stale lock's warning names the line of the `with output_folder(...)` statement (this
    # generator and contextlib's __enter__ lie between it and acquire_lock)
    lock = acquire_lock(folder, command, stacklevel=4) if is_rank_zero() else None
    try:
        yield folder
    finally:
        if lock is not None:
            release_lock(lock)
