"""Type checks of a flat config against dataclass annotations, and the messages that name keys.

Also tested elsewhere: aux_delta_scale's type (test_train_config.py), unknown-key hints
(test_train_recipe_check.py), the unknown-method message (test_train_early_check.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from auxdpo.train.config_check import (
    RENAMED_KEYS,
    check_config_values,
    check_finite_positive,
    unknown_keys_message,
    unknown_method_message,
)


@dataclass
class Recipe:
    max_steps: int = -1
    learning_rate: float = 1e-3
    bf16: bool | None = None
    report_to: list[str] | None = None
    optim_args: dict | None = None
    run_name: str = "run"
    resume_from_checkpoint: str | None = None
    scales: tuple[float, ...] = field(default_factory=tuple)


@dataclass
class Unresolvable:
    max_steps: "NoSuchType" = None  # noqa: F821 - an annotation that cannot be resolved


GOOD = {"max_steps": 10, "learning_rate": 1, "bf16": None, "report_to": "wandb",
        "optim_args": {"a": 1}, "run_name": "x", "resume_from_checkpoint": True,
        "scales": [0.5, 1.0], "not_a_field": object()}


def test_good_values_pass():
    check_config_values(GOOD, Recipe)  # int for float, a single item for a list, bool resume


@pytest.mark.parametrize("key, value, message", [
    ("max_steps", "ten", "max_steps: expected an integer, got 'ten'"),
    ("max_steps", True, "max_steps: expected an integer, got True"),
    ("max_steps", 2.0, "max_steps: expected an integer, got 2.0"),
    ("learning_rate", [1e-3], "learning_rate: expected a number, got [0.001]"),
    ("learning_rate", False, "learning_rate: expected a number, got False"),
    ("bf16", "yes", "bf16: expected true or false, got 'yes'"),
    ("report_to", 3, "report_to: expected a list, got 3"),
    ("optim_args", [1], "optim_args: expected a mapping, got [1]"),
    ("run_name", 5, "run_name: expected a string, got 5"),
    ("resume_from_checkpoint", 1, "resume_from_checkpoint: expected a string, got 1"),
    ("not_a_field", math.nan, "not_a_field: NaN is not a valid value"),
])
def test_the_first_bad_value_is_named_with_what_was_expected(key, value, message):
    with pytest.raises(ValueError) as exc:
        check_config_values({**GOOD, key: value}, Recipe)
    assert str(exc.value) == message


def test_a_class_whose_annotations_cannot_be_resolved_is_skipped():
    check_config_values({"max_steps": "ten"}, Unresolvable)
    with pytest.raises(ValueError, match="^max_steps: expected an integer"):
        check_config_values({"max_steps": "ten"}, Unresolvable, Recipe)


def test_unknown_keys_several_hints_and_renamed_keys():
    known = {"learning_rate", "warmup_steps", "beta"}
    assert unknown_keys_message(["lerning_rate"], known) == \
        "unknown config key(s): lerning_rate (did you mean learning_rate?)"
    assert unknown_keys_message(["aux_jvp", "lerning_rate", "zzz"], known) == (
        f"unknown config key(s): aux_jvp, lerning_rate, zzz (aux_jvp: {RENAMED_KEYS['aux_jvp']}; "
        "lerning_rate: did you mean learning_rate?)")


def test_unknown_method_sigmoid_and_non_text():
    message = unknown_method_message("sigmoid", ["dpo", "auxdpo"], ["dpo", "hinge"])
    assert message == ("method must be one of the paper's dpo, auxdpo, or one of TRL's loss "
                       "types: hinge; got 'sigmoid' (TRL's loss_type sigmoid is method dpo)")
    assert unknown_method_message(3, ["dpo"], ["hinge"]).endswith("; got 3")
    assert unknown_method_message("xyz", ["dpo"], ["hinge"]).endswith("; got 'xyz'")


@pytest.mark.parametrize("value", [1, 0.5, 1e-12, 1e300])
def test_finite_positive_accepts(value):
    check_finite_positive("beta", value)


@pytest.mark.parametrize("value, shown", [(0, "0"), (-1.0, "-1.0"), (math.nan, "nan"),
                                          (math.inf, "inf"), (True, "True"), ("0.1", "'0.1'"),
                                          (None, "None")])
def test_finite_positive_refusals_name_the_key_and_value(value, shown):
    with pytest.raises(ValueError) as exc:
        check_finite_positive("delta_lr", value)
    assert str(exc.value) == f"delta_lr must be a finite number > 0, got {shown}"
