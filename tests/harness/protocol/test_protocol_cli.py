"""``auxdpo protocol check``: every shipped protocol recipe against the installed libraries.

The check reads the recipe as ``protocol run`` does, expands the grid and builds the trainer
config of each method × capacity (``protocol.training.check_training_configs``, which
``run_protocol`` also calls before anything runs), so a ``train.extra`` key the installed
TRL/transformers do not know fails here. No model or data is loaded and nothing is written;
local data files that are missing on this machine are named on the OK line, not refused (the
shipped recipes point at ``../shared/data``, which a fresh clone does not have).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from auxdpo.cli import main
from auxdpo.harness.protocol.recipe import recipe_fingerprint, recipe_from_dict
from auxdpo.harness.protocol.runner import run_protocol

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("examples/protocol/*.yaml"))


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("auxdpo protocol: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0].removeprefix("auxdpo protocol: error: ")


def _small(**train) -> dict:
    return {"name": "small", "model": {"name_or_path": "tiny-llama"},
            "data": {"mmlu_pro": "/nonexistent/mmlu.json", "rewardbench2": "synthetic"},
            "train": {"max_length": 64, "batch_size": 4, **train},
            "grid": {"methods": ["dpo", "auxdpo"], "settings": ["id"], "datasets": ["mmlu-pro"],
                     "capacities": ["100%", "lora:4"], "seeds": 2}}


def _write(tmp_path, values) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def test_the_recipes_are_found():
    assert {"examples/protocol/qwen3-0.6b.yaml", "examples/protocol/llama3.2-1b.yaml",
            "examples/protocol/llama3.1-8b.yaml"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_shipped_protocol_recipe_passes_the_check(recipe, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    values = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
    grid = values["grid"]
    seeds = grid["seeds"] if isinstance(grid["seeds"], int) else len(grid["seeds"])
    runs = (len(grid["methods"]) * len(grid["settings"]) * len(grid["datasets"])
            * len(grid["capacities"]) * seeds)
    assert main(["protocol", "check", "--recipe", recipe]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"{recipe}: OK: recipe {values['name']}, {runs} runs, methods "
                             f"{'/'.join(grid['methods'])}, capacities "
                             f"{'/'.join(grid['capacities'])}, model "
                             f"{values['model']['name_or_path']}, data ")


def test_check_writes_nothing_and_names_missing_local_data(tmp_path, capsys, monkeypatch):
    recipe = _write(tmp_path, _small(extra={"warmup_steps": 0.1}))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["protocol", "check", "--recipe", recipe]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{recipe}: OK: recipe small, 8 runs, methods dpo/auxdpo, capacities "
                          "100%/lora:4, model tiny-llama, data mmlu_pro /nonexistent/mmlu.json;")
    assert out.endswith("; not found here: data.mmlu_pro /nonexistent/mmlu.json")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    ({"warmup_ratio": 0.1}, r"train\.extra: unknown key\(s\): warmup_ratio \(use warmup_steps: "
                            r"transformers >= 5 reads a value below 1 as a fraction"),
    ({"lerning_rate": 0.1}, r"train\.extra: unknown key\(s\): lerning_rate \(did you mean "
                            r"learning_rate\?\)$"),
    ({"warmup_steps": "ten"}, r"train\.extra: warmup_steps: expected a number, got 'ten'$"),
    ({"aux_constraint": "nowhere"}, r"aux_constraint must be one of"),
], ids=["renamed-key", "typo", "bad-type", "bad-value"])
def test_check_refuses_a_bad_extra_naming_file_and_key(tmp_path, capsys, extra, message):
    recipe = _write(tmp_path, _small(extra=extra))
    assert main(["protocol", "check", "--recipe", recipe]) == 2
    error = _one_line_error(capsys)
    assert error.startswith(f"{recipe}: recipe train settings, run mmlu-pro__id__dpo__")
    assert re.search(message, error)


def test_run_refuses_an_unknown_extra_before_anything_is_written(tmp_path):
    recipe = recipe_from_dict(_small(extra={"warmup_ratio": 0.1}))
    with pytest.raises(ValueError, match=r"train\.extra: unknown key\(s\): warmup_ratio"):
        run_protocol(recipe, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_a_folder_recorded_with_warmup_ratio_stays_readable(tmp_path, capsys):
    """recipe.json of a run made before transformers 5.2 keeps the old key: `protocol report`
    reads it (train.extra is checked only when runs are to be trained)."""
    recipe = recipe_from_dict(_small(extra={"warmup_ratio": 0.1}))
    (tmp_path / "recipe.json").write_text(json.dumps(
        {"fingerprint": recipe_fingerprint(recipe), "recipe": recipe.to_dict()}), encoding="utf-8")
    assert main(["protocol", "report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.json").is_file()
    assert "error" not in capsys.readouterr().err
