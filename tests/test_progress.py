"""Progress bars: shown on a terminal (stderr), silent in pipes and logs; `auxdpo eval` labels
its scoring passes."""

from __future__ import annotations

import io
import json

from auxdpo.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_terminal_silent_in_pipe_and_unchanged_items():
    shown, piped = _Terminal(), io.StringIO()
    assert list(progress(range(5), desc="scoring", file=shown)) == [0, 1, 2, 3, 4]
    assert "scoring" in shown.getvalue() and "0/5" in shown.getvalue()
    assert list(progress(range(5), desc="scoring", file=piped)) == [0, 1, 2, 3, 4]
    assert piped.getvalue() == ""
    forced = io.StringIO()
    list(progress(range(3), desc="forced", enabled=True, file=forced))
    assert "0/3" in forced.getvalue()
    items = [1, 2]
    assert progress(items, desc=None) is items  # no label: the loop itself, untouched


def test_eval_shows_labelled_bars_on_a_terminal(tmp_path, monkeypatch):
    import sys

    from auxdpo.cli import main

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    data = tmp_path / "uf.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q{i}: say {i}", "chosen": f"{i} ok",
                                          "rejected": f"no {i * 7}"}) for i in range(6)))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["eval", "--model", "tiny-llama", "--base-model", "tiny-llama", "--data",
                 str(data), "--format", "ultrafeedback", "--batch-size", "4"]) == 0
    err = terminal.getvalue()
    assert "model: scoring pairs" in err and "base: scoring pairs" in err
    assert "0/3" in err  # 12 sequences (6 pairs × 2) in batches of 4
