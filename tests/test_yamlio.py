"""YAML 1.2 booleans and exponent floats in configs and overrides."""

import pytest

from auxdpo.yamlio import load_yaml


@pytest.mark.parametrize("text, expected", [
    ("no", "no"), ("yes", "yes"), ("off", "off"), ("on", "on"), ("y", "y"),
    ("true", True), ("False", False), ("TRUE", True),
    ("1e-3", 0.001), ("-2E5", -200000.0), ("5e-7", 5e-7), ("0.5", 0.5), ("3", 3),
    ("null", None), ("[1, 2]", [1, 2]), ("steps", "steps"),
])
def test_scalars(text, expected):
    value = load_yaml(text)
    assert value == expected and type(value) is type(expected)


def test_mapping_keeps_hf_strategy_strings():
    assert load_yaml("save_strategy: no\nbf16: false\nlearning_rate: 5e-7\n") == {
        "save_strategy": "no", "bf16": False, "learning_rate": 5e-7}


def test_refuses_python_objects():
    import yaml

    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object/apply:os.system ['true']")
