"""One writer per output folder; stale locks of dead processes are taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from auxdpo.cli import main
from auxdpo.locks import (
    LOCK_NAME,
    FolderInUseError,
    acquire_lock,
    output_folder,
    prepare_output_folder,
    release_lock,
)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_second_writer_is_refused_and_the_lock_is_released(tmp_path):
    with output_folder(tmp_path / "out", "first") as folder:
        held = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert held["command"] == "first" and held["host"] == socket.gethostname()
        with pytest.raises(FolderInUseError, match=rf"{folder} is in use by first \(pid "):
            acquire_lock(folder, "second")
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    with output_folder(tmp_path / "out", "third"):  # free again
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                "command": "killed run"}))
    with pytest.warns(UserWarning, match="took over the stale lock of killed run"):
        path = acquire_lock(str(tmp_path), "new run")
    assert json.loads(lock.read_text())["command"] == "new run"
    release_lock(path)
    assert not lock.exists()


def test_unreadable_lock_is_taken_over_and_another_hosts_lock_is_not(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text("{not json")
    with pytest.warns(UserWarning, match="stale lock"):
        release_lock(acquire_lock(str(tmp_path), "new run"))
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "remote run"}))
    with pytest.raises(FolderInUseError, match=f"if that run is gone, delete {lock}"):
        acquire_lock(str(tmp_path), "new run")


def test_a_file_is_no_output_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        prepare_output_folder(tmp_path / "f")
    with pytest.raises(ValueError, match="a parent of it is a file"):
        prepare_output_folder(tmp_path / "f" / "sub")


@pytest.mark.parametrize("argv", [
    ["train", "--model_name_or_path", "tiny-gpt2", "--dataset_name", "x.jsonl",
     "--use_cpu", "--bf16", "false", "--output_dir", "{out}"],
    ["protocol", "run", "--recipe", "examples/protocol/qwen3-0.6b.yaml", "--out", "{out}"],
    ["oracle", "--preset", "quick", "--out", "{out}"],
    ["oracle-grid", "--out", "{out}"],
], ids=["train", "protocol-run", "oracle", "oracle-grid"])
def test_commands_refuse_a_folder_in_use(tmp_path, capsys, argv):
    out = tmp_path / "busy"
    with output_folder(out, "another command"):
        code = main([arg.replace("{out}", str(out)) for arg in argv])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"auxdpo {argv[0]}: error: {out} is in use by another command")


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    """A real second process holds the folder; while it runs the folder is refused, once it
    is killed (SIGKILL: no cleanup) its lock is stale and taken over."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from auxdpo.locks import output_folder\n"
         "with output_folder(sys.argv[1], 'holder'):\n    print('ready', flush=True)\n"
         "    time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(FolderInUseError, match=rf"in use by holder \(pid {holder.pid} "):
            acquire_lock(str(tmp_path), "second")
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # killed: the lock is left behind
    with pytest.warns(UserWarning, match="took over the stale lock of holder"):
        release_lock(acquire_lock(str(tmp_path), "second"))


def test_a_stale_lock_warning_is_one_clean_line(tmp_path):
    """Through the command (a fresh process: pytest records warnings instead of printing
    them): `auxdpo train: warning: ...`, not `contextlib.py:137: UserWarning`; in Python the
    warning points at the line that entered `output_folder`."""
    import os
    from pathlib import Path

    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "killed run",
             "started": "earlier"}
    (out / LOCK_NAME).write_text(json.dumps(stale))
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i} ", "chosen": f"a{i}",
                                        "rejected": f"b{i}{i}"}) + "\n" for i in range(4)))
    src = Path(__file__).resolve().parents[1] / "src"
    done = subprocess.run(
        [sys.executable, "-m", "auxdpo", "train", "--model_name_or_path", "tiny-gpt2",
         "--tiny_hidden_size", "16", "--dataset_name", str(data), "--output_dir", str(out),
         "--use_cpu", "--bf16", "false", "--max_steps", "1", "--report_to", "[]",
         "--save_strategy", "no", "--method", "dpo", "--disable_tqdm", "true"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1",
             "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (f"auxdpo train: warning: {out}: took over the stale lock of killed run (pid "
            in done.stderr)
    assert "contextlib" not in done.stderr and "UserWarning" not in done.stderr
    (out / LOCK_NAME).write_text(json.dumps(stale))
    with pytest.warns(UserWarning) as caught:
        with output_folder(out, "again"):
            pass
    assert caught[0].filename == __file__
