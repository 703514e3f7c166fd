"""Which exceptions the ``auxdpo`` command prints as one line, and how they are worded."""

from __future__ import annotations

import json
import pickle

import pytest
import yaml

from auxdpo.errors import AuxdpoError, user_error_message


@pytest.mark.parametrize("exc, message", [
    (AuxdpoError("run: output folder is busy"), "run: output folder is busy"),
    (ValueError("beta must be > 0,\n   got -1"), "beta must be > 0, got -1"),
    (FileNotFoundError(2, "No such file or directory", "data.jsonl"),
     "[Errno 2] No such file or directory: 'data.jsonl'"),
    (PermissionError("out/: not writable"), "out/: not writable"),
])
def test_expected_failures_become_one_line(exc, message):
    assert user_error_message(exc) == message


def test_json_and_utf8_errors_are_value_errors():
    with pytest.raises(json.JSONDecodeError) as bad_json:
        json.loads("{oops")
    assert user_error_message(bad_json.value) == str(bad_json.value)
    with pytest.raises(UnicodeDecodeError) as bad_bytes:
        b"ok \xff".decode("utf-8")
    assert "can't decode byte 0xff in position 3" in user_error_message(bad_bytes.value)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("beta"), TypeError("x"),
                                 AssertionError("y"), KeyboardInterrupt()])
def test_bugs_keep_their_traceback(exc):
    assert user_error_message(exc) is None


def test_an_empty_message_falls_back_to_the_type_name():
    assert user_error_message(ValueError()) == "ValueError"
    assert user_error_message(AuxdpoError("  \n ")) == "AuxdpoError"


def test_yaml_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("beta: 0.1\nmethod: [auxdpo\n")
    with open(path) as handle, pytest.raises(yaml.YAMLError) as from_file:
        yaml.safe_load(handle)
    assert user_error_message(from_file.value).startswith(
        f"{path}: invalid YAML at line 3, column 1: ")
    with pytest.raises(yaml.YAMLError) as from_text:
        yaml.safe_load("a: b: c")
    assert user_error_message(from_text.value) == (
        "invalid YAML at line 1, column 5: mapping values are not allowed here")
    assert user_error_message(yaml.YAMLError("no mark")) == "invalid YAML: no mark"


def test_refused_pickles_are_named_by_their_first_line():
    exc = pickle.UnpicklingError("Weights only load failed.\nPlease file an issue ...")
    assert user_error_message(exc) == "refused to load a pickled file: Weights only load failed."
