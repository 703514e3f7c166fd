"""Atomic writes that honour the umask, and fixing the mode of files others wrote 0600."""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest

from auxdpo.files import atomic_write_text, honour_umask, publish, umask_mode


@contextmanager
def umask(value):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600),
                                            (0o000, 0o666)])
def test_umask_mode_is_0666_less_the_umask_and_leaves_it_set(mask, expected):
    with umask(mask):
        assert umask_mode() == expected
        assert os.umask(mask) == mask  # unchanged by the probe


def test_atomic_write_creates_parents_writes_utf8_and_takes_the_umask_mode(tmp_path):
    target = tmp_path / "a" / "b" / "metrics.json"
    with umask(0o027):
        atomic_write_text(target, "δ ≥ 0\n")
        assert target.read_bytes() == "δ ≥ 0\n".encode()
        assert mode(target) == 0o640
        atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]  # no temp left


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_text(target, 12345)  # not text: fails inside the write
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_publish_gives_the_umask_mode_then_renames(tmp_path):
    tmp, target = tmp_path / ".x.tmp", tmp_path / "x.txt"
    tmp.write_text("done")
    os.chmod(tmp, 0o600)
    with umask(0o022):
        publish(tmp, target)
    assert not tmp.exists() and target.read_text() == "done" and mode(target) == 0o644


def test_honour_umask_fixes_only_matching_files(tmp_path):
    for name in ("model.safetensors", "aux_deltas.safetensors", "notes.txt"):
        (tmp_path / name).write_text(name)
        os.chmod(tmp_path / name, 0o600)
    (tmp_path / "dir.safetensors").mkdir(mode=0o700)
    with umask(0o002):
        honour_umask(tmp_path)
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "model.safetensors": 0o664, "aux_deltas.safetensors": 0o664, "notes.txt": 0o600,
        "dir.safetensors": 0o700}
    with umask(0o022):
        honour_umask(tmp_path, "*.txt")
    assert mode(tmp_path / "notes.txt") == 0o644
