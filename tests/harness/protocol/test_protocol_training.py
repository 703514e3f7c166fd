"""Training one protocol run: its log file, its config."""

from __future__ import annotations

import json
import os


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
