"""What `protocol run` prints: one line per run (a bar on a terminal) and a summary, from rank 0
only; the trainer's per-step dicts go to each run's log file, not the console."""

from __future__ import annotations

from protocol_fakes import Interrupting, fake_base, small_recipe

from auxdpo.harness.protocol.runner import run_protocol


def test_one_line_per_run_off_terminal_and_nothing_on_other_ranks(tmp_path, capsys,
                                                                   monkeypatch):
    recipe = small_recipe(methods=["dpo"], datasets=["mmlu-pro"], settings=["id"],
                          capacities=["100%"], seeds=2)
    run_protocol(recipe, str(tmp_path / "a"), run_fn=Interrupting(), base_fn=fake_base,
                 report=False)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "protocol: 1/2 mmlu-pro__id__dpo__cap-100pct__seed0",
        "protocol: 2/2 mmlu-pro__id__dpo__cap-100pct__seed1"]
    monkeypatch.setenv("RANK", "1")
    run_protocol(recipe, str(tmp_path / "b"), run_fn=Interrupting(), base_fn=fake_base,
                 report=False)
    assert capsys.readouterr().err == ""


