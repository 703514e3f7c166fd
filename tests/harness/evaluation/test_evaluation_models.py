"""Which model an evaluation loads: the base model of a run folder."""

import json

import yaml

from auxdpo.harness.evaluation.models import RUN_CONFIG, ModelSpec, base_spec_of_run


def test_base_spec_from_a_train_run_config(tmp_path):
    (tmp_path / RUN_CONFIG).write_text(yaml.safe_dump({"run": {
        "model_name_or_path": "tiny-gpt2", "tiny_num_layers": 1, "tiny_seed": 4}}))
    spec = base_spec_of_run(str(tmp_path))
    assert (spec.name_or_path, spec.tiny_num_layers, spec.tiny_hidden_size, spec.tiny_seed) == (
        "tiny-gpt2", 1, 32, 4)                                     # hidden size: the default


def test_base_spec_from_an_adapter_folder_or_none(tmp_path):
    assert base_spec_of_run(str(tmp_path)) is None
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": ""}))
    assert base_spec_of_run(str(tmp_path)) is None
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "org/base"}))
    assert base_spec_of_run(str(tmp_path)) == ModelSpec(name_or_path="org/base")

