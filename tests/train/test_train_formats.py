"""``auxdpo train`` on multi-comparison formats: the pairs, soft labels reaching the loss, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import train_helpers  # noqa: F401  (offline hub, no progress bars, one thread)

from auxdpo.cli import main
from auxdpo.data import ExpansionOptions, load_comparisons
from auxdpo.train.run import RunArguments, load_dataset_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_fixtures import MULTI_FIXTURES  # noqa: E402


@pytest.mark.parametrize("fmt", sorted(MULTI_FIXTURES))
def test_load_dataset_rows_expands_each_format(fmt):
    run_args = RunArguments(dataset_name=str(MULTI_FIXTURES[fmt]), dataset_format=fmt,
                            dataset_ties="half", dataset_soft_label_temperature=2.0)
    data = load_dataset_rows(run_args, pref_prob_column="pref_prob")
    expected = load_comparisons(MULTI_FIXTURES[fmt], fmt,
                                options=ExpansionOptions(ties="half", temperature=2.0))
    assert data.to_list() == expected.to_list()
    assert 0.5 in data["pref_prob"] and max(data["pref_prob"]) < 1.0


def test_soft_label_column_follows_the_config():
    run_args = RunArguments(dataset_name=str(MULTI_FIXTURES["scored-responses"]),
                            dataset_format="scored-responses", max_train_rows=3,
                            dataset_soft_label_temperature=1.0)
    data = load_dataset_rows(run_args, pref_prob_column="label")
    assert "label" in data.column_names and "pref_prob" not in data.column_names
    assert len(data) == 3
    with pytest.raises(ValueError, match="need pref_prob_column"):
        load_dataset_rows(run_args, pref_prob_column=None)
    hard = RunArguments(dataset_name=str(MULTI_FIXTURES["scored-responses"]),
                        dataset_format="scored-responses")
    assert "pref_prob" not in load_dataset_rows(hard, pref_prob_column="pref_prob").column_names


@pytest.mark.parametrize("values, message", [
    ({"dataset_format": "csv"}, "dataset_format must be one of"),
    ({"dataset_format": "scored-responses", "dataset_ties": "keep"}, "ties must be one of"),
    ({"dataset_format": "scored-responses", "dataset_soft_label_temperature": -1},
     "temperature must be a positive number"),
])
def test_bad_format_arguments(values, message):
    with pytest.raises(ValueError, match=message):
        RunArguments(dataset_name="x.jsonl", **values)


def _train(tmp_path, name, data, *extra):
    out = tmp_path / name
    code = main(["train", "--model_name_or_path", "tiny-gpt2", "--tiny_hidden_size", "16",
                 "--dataset_name", str(data), "--output_dir", str(out), "--method", "dpo",
                 "--max_steps", "2", "--per_device_train_batch_size", "8", "--use_cpu",
                 "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "[]",
                 "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true",
                 "--max_length", "64", "--seed", "0", "--learning_rate", "0.01",
                 "--lr_scheduler_type", "constant", *extra])
    assert code == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if "loss" in x]


def test_train_on_scored_responses_uses_the_soft_labels(tmp_path):
    source = MULTI_FIXTURES["scored-responses"]
    options = ExpansionOptions(temperature=1.0)
    expanded = tmp_path / "expanded.jsonl"  # the same pairs, as plain TRL rows
    expanded.write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected",
                                                              "pref_prob")}) + "\n"
                                for p in load_comparisons(source, "scored-responses",
                                                          options=options)))
    soft = _train(tmp_path, "soft", source, "--dataset_format", "scored-responses",
                  "--dataset_soft_label_temperature", "1")
    plain = _train(tmp_path, "plain", expanded)
    hard = _train(tmp_path, "hard", source, "--dataset_format", "scored-responses")
    assert soft == plain  # same pairs, same labels, same seed: the same two steps
    # at θ₀ every margin is 0 and DPO's loss is log 2 whatever the label; the labels act
    # through the first step's gradient, so the second step's loss tells them apart
    assert soft[0] == hard[0] == pytest.approx(0.6931471805599453, rel=1e-6)
    assert abs(soft[1] - hard[1]) > 1e-3


def test_train_reports_bad_rows_of_a_format(tmp_path, capsys):
    bad = tmp_path / "s.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"], "scores": [1]}) + "\n")
    code = main(["train", "--model_name_or_path", "tiny-gpt2", "--dataset_name", str(bad),
                 "--dataset_format", "scored-responses", "--output_dir",
                 str(tmp_path / "run"), "--use_cpu", "--bf16", "false"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad}: row 1, field 'scores': has 1 entries for 2 responses" in err
