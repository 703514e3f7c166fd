"""A failed ``protocol run`` start writes nothing: bad values are refused before base scoring."""

import os

import pytest

from auxdpo.harness.protocol.recipe import recipe_from_dict
from auxdpo.harness.protocol.runner import run_protocol


def _values(**train):
    return {"name": "check", "model": {"name_or_path": "tiny-llama", "tiny_num_layers": 2},
            "data": {"mmlu_pro": "/nonexistent/mmlu.json", "rewardbench2": "synthetic"},
            "train": {"max_length": 64, "batch_size": 4, **train},
            "grid": {"methods": ["dpo"], "settings": ["id"], "datasets": ["mmlu-pro"],
                     "capacities": ["100%"], "seeds": 1}}


def test_bad_data_path_pins_no_recipe_and_the_corrected_recipe_is_accepted(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="data.mmlu_pro: /nonexistent/mmlu.json"):
        run_protocol(recipe_from_dict(_values()), str(out), progress=False)
    assert not (out / "recipe.json").exists()
    # A corrected recipe (here: its runs injected) is not refused as "a different recipe".
    fixed = _values()
    fixed["data"]["mmlu_pro"] = "elsewhere.json"
    progress = run_protocol(recipe_from_dict(fixed), str(out), progress=False, report=False,
                            run_fn=lambda run: {"metrics": {}},
                            base_fn=lambda dataset: {"metrics": {}})
    assert progress.ran == 1 and (out / "recipe.json").exists()


@pytest.mark.parametrize("train, message", [
    ({"beta": float("nan")}, r"section 'train': beta: NaN is not a valid value"),
    ({"beta": -1.0}, r"train.beta must be a finite number > 0, got -1.0"),
    ({"learning_rate": float("inf")}, r"train.learning_rate must be a finite number > 0"),
    ({"num_train_epochs": "two"}, r"section 'train': num_train_epochs: expected a number, "
                                  r"got 'two'"),
    ({"max_steps": 2.5}, r"section 'train': max_steps: expected an integer, got 2.5"),
])
def test_bad_train_values_fail_when_the_recipe_is_read(train, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict(_values(**train))


def test_bad_trainer_extra_fails_before_anything_is_written(tmp_path):
    """train.extra goes to AuxDPOConfig unchecked by the recipe: every run's config is built
    before the base model would be scored."""
    recipe = recipe_from_dict(_values(extra={"aux_constraint": "nowhere"}))
    with pytest.raises(ValueError, match=r"run .*: aux_constraint must be one of"):
        run_protocol(recipe, str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")
