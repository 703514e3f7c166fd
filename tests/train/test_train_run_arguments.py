"""What ``auxdpo train`` loads, read without heavy imports.

Also tested elsewhere: basic overrides (test_train_cli.py), data_source
(test_train_recipe_check.py), dataset_format checks (test_train_formats.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from auxdpo.train.run_arguments import RunArguments, looks_like_data_file, parse_overrides


def test_overrides_edge_cases():
    assert parse_overrides([]) == {}
    assert parse_overrides(["--run-name=a=b", "--output_dir=", "--eval-split", "--seed", "3",
                            "--lr", "-1e-3", "--tags", "[a, b]", "--flag"]) == {
        "run_name": "a=b", "output_dir": "", "eval_split": True, "seed": 3, "lr": -0.001,
        "tags": ["a", "b"], "flag": True}
    assert parse_overrides(["--bf16", "yes", "--x", "off", "--y", "~"]) == {
        "bf16": "yes", "x": "off", "y": None}  # YAML 1.2: yes/off stay strings


@pytest.mark.parametrize("tokens, bad", [(["--"], "--"), (["-b", "1"], "-b"),
                                         (["--beta", "0.1", "0.2"], "0.2")])
def test_a_token_that_is_not_a_key_is_named(tokens, bad):
    with pytest.raises(ValueError) as exc:
        parse_overrides(tokens)
    assert str(exc.value) == f"override {bad!r}: expected --key value or --key=value"


def test_data_file_suffixes_depend_on_the_format():
    assert looks_like_data_file("rows.jsonl", None) and looks_like_data_file("R.JSON", None)
    assert not looks_like_data_file("rows.parquet", None)
    assert looks_like_data_file("rows.Parquet", "scored-responses")
    assert not looks_like_data_file("org/set", "ultrafeedback")
    assert not looks_like_data_file("folder.d/rows", None)


def test_expansion_options_carry_the_dataset_keys():
    run_args = RunArguments(dataset_name="x.jsonl", dataset_format="openbmb-ultrafeedback",
                            dataset_ties="half", dataset_soft_label_temperature=2.0,
                            dataset_score_field="overall_score")
    options = run_args.expansion_options()
    assert (options.ties, options.temperature, options.score_field) == ("half", 2.0,
                                                                        "overall_score")
    # without dataset_format the rows are read as they are: the tie rule is not checked
    assert RunArguments(dataset_name="x.jsonl", dataset_ties="keep").dataset_ties == "keep"


def test_reading_the_arguments_imports_neither_torch_nor_transformers():
    code = ("import sys\n"
            "from auxdpo.train.run_arguments import RunArguments, data_source, parse_overrides\n"
            "RunArguments(dataset_name='x.jsonl', dataset_format='scored-responses')\n"
            "parse_overrides(['--beta', '0.1'])\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') "
            "if m in sys.modules)\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stderr
