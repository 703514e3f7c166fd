"""Every shipped training recipe against the installed libraries, and ``auxdpo train --check``.

``examples/*.yaml`` go through :func:`auxdpo.train.recipe_check.check_recipe`, the code path of
``auxdpo train --config FILE --check``: unknown keys, value types and every check of the
installed TRL/transformers' ``DPOConfig``/``TrainingArguments``, no model or data loaded. A
recipe key the installed libraries do not know fails here (``warmup_ratio``, which
transformers 5.2 removed, did). ``examples/accelerate/*.yaml`` are read by accelerate's own
loader (``load_config_from_file``: keys against ``ClusterConfig``, enum values).

Measured wall time of ``auxdpo train --config examples/qwen3_06b_auxdpo.yaml --check`` on the
2-core development machine (load ~2): 5.8-8.4 s, of which 4.9-5.9 s is importing TRL's
``DPOConfig`` (transformers, peft, torch) and ~10-30 ms the check itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from auxdpo.cli import main
from auxdpo.train.recipe_check import check_recipe, read_recipe_file

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("examples/*.yaml"))
ACCELERATE = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("examples/accelerate/*.yaml"))


@pytest.fixture
def at_root(monkeypatch):
    """Recipes name their data relative to the repository root, as the docs run them."""
    monkeypatch.chdir(ROOT)


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("auxdpo train: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0].removeprefix("auxdpo train: error: ")


def test_the_recipes_are_found():
    assert {"examples/tiny_auxdpo.yaml", "examples/qwen3_06b_auxdpo.yaml",
            "examples/llama32_1b_auxdpo.yaml"} <= set(RECIPES)
    assert len(ACCELERATE) >= 5


@pytest.mark.parametrize("recipe", RECIPES)
def test_shipped_recipe_passes_the_check(recipe, at_root):
    values = read_recipe_file(recipe)
    summary = check_recipe(recipe, [])
    assert summary.startswith(f"{recipe}: OK: method {values.get('method', 'auxdpo')}, "
                              f"capacity {values.get('capacity', 'full')}, "
                              f"model {values['model_name_or_path']} ")
    name = values["dataset_name"]
    beside = os.path.normpath(Path(recipe).parent / name)  # a file named beside the recipe
    name = beside if not Path(name).exists() and Path(beside).is_file() else name
    kind = "file" if Path(name).is_file() else "hub"
    assert f"data {kind} {name} (split {values.get('dataset_split', 'train')}" in summary
    assert "\n" not in summary
    assert not Path(values["output_dir"]).exists()  # nothing written


def test_the_check_applies_the_resolved_values(at_root):
    """warmup_steps: 0.1 is a fraction in transformers >= 5 (10 warm-up steps of 100)."""
    from auxdpo.train.recipe_check import resolve_recipe

    run_args, config = resolve_recipe("examples/qwen3_06b_auxdpo.yaml", ["--use_cpu"])
    assert config.warmup_steps == 0.1 and config.get_warmup_steps(100) == 10
    assert config.capacity == "lora:4" and config.num_train_epochs == 1
    assert run_args.dataset_format == "rlhflow-ultrafeedback"
    assert run_args.dataset_soft_label_temperature == 1.0


@pytest.mark.parametrize("recipe", RECIPES)
def test_auxdpo_recipes_train_on_multi_comparison_data(recipe, at_root):
    """An AuxDPO recipe on one pair per response would be DPO for its first epoch: every
    shipped one names a multi-comparison format, or a local file whose responses recur."""
    from auxdpo.data.check import check_file
    from auxdpo.data.comparisons import MULTI_FORMATS
    from auxdpo.train.recipe_check import resolve_recipe

    run_args, config = resolve_recipe(recipe, ["--use_cpu"])
    if config.method != "auxdpo":
        pytest.skip("not an AuxDPO recipe")
    if run_args.dataset_format is not None:
        assert run_args.dataset_format in MULTI_FORMATS
    else:
        report = check_file(run_args.dataset_name, "ultrafeedback")
        assert report.ok and report.stats.pairs_per_response > 1
        assert report.stats.share_in_2_or_more == 1.0


@pytest.mark.parametrize("recipe", ACCELERATE)
def test_shipped_accelerate_config_loads(recipe):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import PrecisionType

    config = load_config_from_file(str(ROOT / recipe))
    assert isinstance(config, ClusterConfig)
    assert config.mixed_precision in {p.value for p in PrecisionType}
    assert config.num_processes >= 1


def test_check_exit_code_and_one_line_summary(capsys, at_root):
    assert main(["train", "--config", "examples/tiny_auxdpo.yaml", "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(
        "examples/tiny_auxdpo.yaml: OK: method auxdpo, capacity full, model tiny-gpt2 ")


@pytest.mark.parametrize("args", [
    ["--check", "--method", "dpo", "--capacity", "last-block"],
    ["--method", "dpo", "--check", "--capacity=last-block"],
], ids=["check-first", "check-between"])
def test_check_takes_overrides(capsys, at_root, args):
    assert main(["train", "--config", "examples/tiny_auxdpo.yaml", *args]) == 0
    assert "OK: method dpo, capacity last-block," in capsys.readouterr().out


def test_bf16_recipe_is_checked_as_on_a_gpu(capsys, at_root):
    from auxdpo.train.defaults import bf16_available

    assert main(["train", "--config", "examples/qwen3_06b_auxdpo.yaml", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("; bf16 checked as on a GPU with bf16 (none here)") \
        == (not bf16_available())


def _recipe(tmp_path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("text, extra, message", [
    ("warmup_ratio: 0.1\n", [],
     r"^{path}: unknown config key\(s\): warmup_ratio \(use warmup_steps: transformers >= 5 "
     r"reads a value below 1 as a fraction of the total steps, e.g. warmup_steps: 0.1\)$"),
    ("lerning_rate: 1.0e-4\n", [],
     r"^{path}: unknown config key\(s\): lerning_rate \(did you mean learning_rate\?\)$"),
    ("", ["--lerning_rate", "1e-4"],
     r"^unknown config key\(s\): lerning_rate \(did you mean learning_rate\?\)$"),
    ("max_steps: ten\n", [], r"^{path}: max_steps: expected an integer, got 'ten'$"),
    ("", ["--max_steps", "ten"], r"^max_steps: expected an integer, got 'ten'$"),
    ("beta: -1\n", [], r"^{path}: beta must be a finite number > 0, got -1$"),
    ("dataset_name: missing.jsonl\n", [],
     r"^{path}: dataset file missing.jsonl does not exist: looked for /\S+/missing.jsonl \(from "
     r"the current folder\) and /\S+/missing.jsonl \(beside the recipe\)$"),
    ("", ["--dataset_name", "missing.jsonl"], r"^dataset file missing.jsonl does not exist$"),
    ("dataset_name: ''\n", [], r"^{path}: dataset_name is required"),
    ("method: dpo\nbeta: [0.1\n", [], r"^{path}: invalid YAML at line 4, column 1"),  # line 1: dataset_name
], ids=["renamed-key", "typo-in-file", "typo-override", "bad-type-in-file", "bad-type-override",
        "bad-value", "missing-data-file", "missing-data-override", "no-data", "bad-yaml"])
def test_check_errors_name_file_and_key(tmp_path, capsys, text, extra, message):
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    path = _recipe(tmp_path, f"dataset_name: {data}\n" + text if "dataset_name" not in text
                   else text)
    assert main(["train", "--config", path, "--check", *extra]) == 2
    assert re.search(message.replace("{path}", re.escape(path)), _one_line_error(capsys))


def test_a_training_run_names_the_file_of_a_bad_key(tmp_path, capsys):
    """Without --check the same resolution runs first: the error comes before any loading."""
    path = _recipe(tmp_path, "model_name_or_path: tiny-gpt2\nwarmup_ratio: 0.1\n")
    assert main(["train", "--config", path]) == 2
    assert _one_line_error(capsys).startswith(f"{path}: unknown config key(s): warmup_ratio (")


def test_the_test_fails_on_a_key_the_libraries_do_not_know(tmp_path, at_root):
    """What test_shipped_recipe_passes_the_check guards: the removed key in a real recipe."""
    text = Path("examples/qwen3_06b_auxdpo.yaml").read_text(encoding="utf-8")
    assert "warmup_steps: 0.1" in text
    broken = _recipe(tmp_path, text.replace("warmup_steps: 0.1", "warmup_ratio: 0.1"))
    with pytest.raises(ValueError, match=r"unknown config key\(s\): warmup_ratio"):
        check_recipe(broken, [])


def test_unknown_keys_message_hints():
    from auxdpo.train.config_check import unknown_keys_message

    known = {"beta", "learning_rate", "warmup_steps"}
    assert unknown_keys_message(["zzz"], known) == "unknown config key(s): zzz"
    assert unknown_keys_message({"zzz", "betta"}, known) == \
        "unknown config key(s): betta, zzz (betta: did you mean beta?)"
    assert unknown_keys_message(["warmup_ratio"], known, "train.extra: unknown key(s)") == (
        "train.extra: unknown key(s): warmup_ratio (use warmup_steps: transformers >= 5 reads a "
        "value below 1 as a fraction of the total steps, e.g. warmup_steps: 0.1)")


def test_data_source_names_the_rows_without_reading_them(tmp_path, monkeypatch):
    from auxdpo.train.run import RunArguments, data_source, load_dataset_rows

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text("not read\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    assert data_source(RunArguments(dataset_name="rows.jsonl")) == "file rows.jsonl"
    assert data_source(RunArguments(dataset_name="folder")) == "folder folder"
    assert data_source(RunArguments(dataset_name="org/set")) == "hub org/set"
    # a .parquet name is a file only for dataset_format (auxdpo.data reads it), as when loading
    assert data_source(RunArguments(dataset_name="x.parquet")) == "hub x.parquet"
    with pytest.raises(FileNotFoundError, match="^dataset file x.parquet does not exist$"):
        data_source(RunArguments(dataset_name="x.parquet", dataset_format="ultrafeedback"))
    for run_args in (RunArguments(dataset_name="gone.json"),
                     RunArguments(dataset_name="gone.JSONL", dataset_format="ultrafeedback")):
        with pytest.raises(FileNotFoundError, match=f"^dataset file {run_args.dataset_name} "):
            load_dataset_rows(run_args)
    with pytest.raises(ValueError, match="^dataset_name is required"):
        data_source(RunArguments())


def test_a_recipe_finds_its_data_file_beside_it_from_any_folder(tmp_path, monkeypatch):
    """examples/tiny_auxdpo.yaml names tiny_prefs.jsonl: from the current folder when there
    is one of that name, else beside the recipe; neither: the error names both paths."""
    recipe = str(ROOT / "examples" / "tiny_auxdpo.yaml")
    monkeypatch.chdir(tmp_path)
    beside = ROOT / "examples" / "tiny_prefs.jsonl"
    assert f"data file {beside} (split train)" in check_recipe(recipe, [])
    (tmp_path / "tiny_prefs.jsonl").write_text(beside.read_text(), encoding="utf-8")
    assert "data file tiny_prefs.jsonl (split train)" in check_recipe(recipe, [])
    own = tmp_path / "recipes" / "run.yaml"
    own.parent.mkdir()
    own.write_text("dataset_name: data/prefs.jsonl\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError) as info:
        check_recipe(str(own), [])
    assert str(info.value) == (f"{own}: dataset file data/prefs.jsonl does not exist: looked "
                               f"for {tmp_path / 'data' / 'prefs.jsonl'} (from the current "
                               f"folder) and {own.parent / 'data' / 'prefs.jsonl'} (beside "
                               "the recipe)")
    assert check_recipe(str(own), ["--dataset_name", "tiny_prefs.jsonl"])  # override: cwd


@pytest.mark.parametrize("key", ["aux_fused_reference", "aux_share_prefix",
                                 "aux_truncate_products", "aux_keep_reference_graph", "aux_jvp",
                                 "amp_sign", "delta_optimizer", "recompute_u_every"])
def test_a_removed_key_is_named_with_what_replaced_it(tmp_path, capsys, key):
    """The performance switches became automatic: a recipe that still sets one gets one
    line naming the key and what to do, exit code 2, before anything loads."""
    from auxdpo.train.config_check import RENAMED_KEYS

    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    path = _recipe(tmp_path, f"dataset_name: {data}\n{key}: 1\n")
    assert main(["train", "--config", path, "--check"]) == 2
    line = _one_line_error(capsys)
    assert line == f"{path}: unknown config key(s): {key} ({RENAMED_KEYS[key]})"
    assert RENAMED_KEYS[key].startswith("removed: ")
