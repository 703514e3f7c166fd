"""What `protocol run` prints: one line per run (a bar on a terminal) and a summary, from rank 0
only; the trainer's per-step dicts go to each run's log file, not the console."""

from __future__ import annotations

import json
import os

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


def test_train_policy_logs_to_the_run_file_not_the_console(tmp_path, capsys):
    from auxdpo.harness.protocol.recipe import RunSpec, recipe_from_dict
    from auxdpo.harness.protocol.training import run_log_path, train_policy

    recipe = recipe_from_dict({"name": "t", "model": {"name_or_path": "tiny-gpt2",
                                                      "tiny_num_layers": 1},
                               "train": {"max_steps": 3, "batch_size": 2, "max_length": 64,
                                         "learning_rate": 1e-3},
                               "grid": {"methods": ["dpo"], "settings": ["id"],
                                        "datasets": ["mmlu-pro"], "capacities": ["100%"],
                                        "seeds": 1}})
    run = RunSpec("mmlu-pro", "id", "dpo", "100%", 0)
    pairs = [{"prompt": f"q{i} ", "chosen": f"{i}", "rejected": f"n{i}"} for i in range(6)]
    work = tmp_path / "work"
    stale = run_log_path(str(tmp_path), run)
    os.makedirs(os.path.dirname(stale))
    with open(stale, "w") as handle:
        handle.write('{"stale": true}\n')
    recipe.train.extra["logging_steps"] = 1
    _, _, info = train_policy(recipe, run, pairs, str(work))
    printed = capsys.readouterr().out
    assert "{'loss'" not in printed and "train_runtime" not in printed
    records = [json.loads(line) for line in open(stale)]
    assert "stale" not in records[0]  # a redone run starts its log afresh
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert info["steps"] == 3
