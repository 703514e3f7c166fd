"""Writing files so that readers never see half of one, with the mode the umask gives.

:func:`atomic_write_text` writes to a temporary file in the target's folder (created with its
parents), then renames it into place with ``os.replace``: a reader sees the old file or the
new one, never a partial write. The temporary name is ``.<name>.<random>.tmp``: hidden, and
never matching the target's own extension, so a folder scan for ``*.json`` cannot pick it up.
``mkstemp`` creates files 0600; :func:`publish` gives the finished file the mode a plain
``open`` would (0666 less the umask) before the rename. No fsync: a crash of the machine
itself (not of the process) may lose the latest write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "honour_umask", "publish", "umask_mode"]


def umask_mode() -> int:
    """The mode a newly created file gets from the process's umask: ``0o666 & ~umask``."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a finished temporary file the umask's mode (mkstemp makes it 0600), then rename."""
    os.chmod(tmp, umask_mode())
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def honour_umask(folder: str | os.PathLike, pattern: str = "*.safetensors") -> None:
    """Give ``folder``'s files matching ``pattern`` the umask's mode: the safetensors writer
    creates its files 0600 whatever the umask."""
    mode = umask_mode()
    for path in Path(folder).glob(pattern):
        if path.is_file() and path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
