"""Recipe parsing, validation and the run grid."""

import glob
import os

import pytest

from auxdpo.harness.protocol.recipe import (
    RunSpec,
    capacity_preset,
    expand_grid,
    load_recipe,
    recipe_fingerprint,
    recipe_from_dict,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.mark.parametrize("label, preset", [("25%", "last:0.25"), ("50%", "last:0.5"),
                                           ("75%", "last:0.75"), ("100%", "full"),
                                           ("last-block", "last-block"), ("lora:4", "lora:4"),
                                           ("last:0.3", "last:0.3")])
def test_capacity_labels_map_to_trainer_presets(label, preset):
    assert capacity_preset(label) == preset


@pytest.mark.parametrize("label", ["0%", "150%", "lora:0", "half", "last:2"])
def test_bad_capacity_labels_are_rejected(label):
    with pytest.raises(ValueError):
        capacity_preset(label)


def test_default_grid_is_the_papers_full_protocol():
    recipe = recipe_from_dict({})
    runs = expand_grid(recipe)
    # 4 methods × 2 settings × 2 data sets × 6 capacities × 3 seeds
    assert len(runs) == 4 * 2 * 2 * 6 * 3 == 288
    assert len({run.run_id for run in runs}) == 288
    assert runs[0] == RunSpec("mmlu-pro", "id", "dpo", "25%", 0)
    assert runs[1] == RunSpec("mmlu-pro", "id", "dpo", "25%", 1)
    assert runs[3] == RunSpec("mmlu-pro", "id", "auxdpo", "25%", 0)
    assert runs[-1] == RunSpec("rewardbench2", "ood", "dpop", "lora:4", 2)
    assert recipe.table_capacity == "100%"


def test_small_grid_expands_exactly():
    recipe = recipe_from_dict({"grid": {"methods": ["auxdpo", "dpo"], "settings": ["ood"],
                                        "datasets": ["rewardbench2"],
                                        "capacities": ["lora:4", "50%"], "seeds": [3, 7]}})
    ids = [run.run_id for run in expand_grid(recipe)]
    assert ids == ["rewardbench2__ood__auxdpo__cap-lora-4__seed3",
                   "rewardbench2__ood__auxdpo__cap-lora-4__seed7",
                   "rewardbench2__ood__dpo__cap-lora-4__seed3",
                   "rewardbench2__ood__dpo__cap-lora-4__seed7",
                   "rewardbench2__ood__auxdpo__cap-50pct__seed3",
                   "rewardbench2__ood__auxdpo__cap-50pct__seed7",
                   "rewardbench2__ood__dpo__cap-50pct__seed3",
                   "rewardbench2__ood__dpo__cap-50pct__seed7"]
    assert recipe.table_capacity == "50%"  # no 100% in the grid: the last capacity


@pytest.mark.parametrize("values, words", [
    ({"grid": {"methods": ["dpo", "kto"]}}, ["grid.methods", "kto"]),
    ({"grid": {"seeds": [1, 1]}}, ["grid.seeds"]),
    ({"grid": {"seeds": 0}}, ["grid.seeds"]),
    ({"grid": {"settings": []}}, ["grid.settings"]),
    ({"grid": {"capacities": ["50%", "50%"]}}, ["duplicates"]),
    ({"train": {"betta": 0.1}}, ["'train'", "betta"]),
    ({"train": {"beta": -1}}, ["train.beta"]),
    ({"train": {"extra": {"method": "dpo"}}}, ["train.extra", "method"]),
    ({"data": {"test_fraction": 1.5}}, ["data.test_fraction"]),
    ({"data": {"max_rows": 0}}, ["data.max_rows"]),
    ({"model": {"dtype": "int8"}}, ["model.dtype"]),
    ({"eval": {"table_capacity": "25%"}, "grid": {"capacities": ["50%"]}},
     ["eval.table_capacity"]),
    ({"trian": {}}, ["trian"]),
    ({"grid": [1, 2]}, ["'grid'", "mapping"]),
])
def test_invalid_recipes_name_the_field(values, words):
    with pytest.raises(ValueError) as info:
        recipe_from_dict(values)
    for word in words:
        assert word in str(info.value)


def test_yaml_recipe_round_trip(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: mine\ngrid:\n  methods: [dpo]\n  seeds: 2\ntrain:\n  beta: 0.5\n"
                    "  extra: {aux_constraint: batch}\n")
    recipe = load_recipe(str(path))
    assert (recipe.name, recipe.grid.seeds, recipe.train.beta) == ("mine", [0, 1], 0.5)
    assert recipe.train.extra == {"aux_constraint": "batch"}
    assert recipe_from_dict(recipe.to_dict()) == recipe
    path.write_text("grid: [unclosed\n")
    with pytest.raises(ValueError, match="r.yaml"):
        load_recipe(str(path))


def test_fingerprint_ignores_the_grid_but_not_training():
    base = recipe_from_dict({})
    assert recipe_fingerprint(base) == recipe_fingerprint(
        recipe_from_dict({"grid": {"seeds": 20}, "name": "other"}))
    assert recipe_fingerprint(base) != recipe_fingerprint(recipe_from_dict({"train": {"beta": 0.2}}))


def test_fingerprint_counts_later_data_fields_only_when_set():
    import hashlib
    import json

    base = recipe_from_dict({})
    core = {k: v for k, v in base.to_dict().items() if k not in ("grid", "estimates", "name")}
    core["data"] = {k: v for k, v in core["data"].items()
                    if not k.startswith("dataset_")}
    # the hash a recipe has when it leaves the dataset_* fields at their defaults
    before = hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode())
    assert recipe_fingerprint(base) == before.hexdigest()[:16]
    assert recipe_fingerprint(base) != recipe_fingerprint(recipe_from_dict(
        {"data": {"dataset_format": "scored-responses"}}))


def test_example_recipes_parse():
    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "protocol", "*.yaml")))
    assert len(paths) >= 3
    for path in paths:
        recipe = load_recipe(path)
        assert expand_grid(recipe)
        assert "gpu_memory" in recipe.estimates and "wall_time" in recipe.estimates


@pytest.mark.parametrize("old, new", [("ultrafeedback_format", "dataset_format"),
                                      ("ultrafeedback_ties", "dataset_ties"),
                                      ("ultrafeedback_soft_label_temperature",
                                       "dataset_soft_label_temperature"),
                                      ("ultrafeedback_score_field", "dataset_score_field")])
def test_an_old_data_key_names_its_replacement(old, new):
    with pytest.raises(ValueError, match=f"'{old}' is now '{new}'"):
        recipe_from_dict({"data": {old: "x"}})


def test_an_old_data_key_is_a_one_line_error_through_the_cli(tmp_path, capsys):
    from auxdpo.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  ultrafeedback_format: rlhflow-ultrafeedback\n")
    assert main(["protocol", "check", "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ultrafeedback_format' is now 'dataset_format'" in err[0]
