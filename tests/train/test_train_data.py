"""Bad input gets a clear error naming the row and the field; over-long prompts are counted."""

from __future__ import annotations

import logging

import pytest
import torch
import train_helpers as H
from datasets import Dataset

from auxdpo.train.data import AuxPreferenceCollator, RowTable, validate_preference_rows
from auxdpo.train.trainer import AuxDPOTrainer


def _with(row_index, **changes):
    data = H.rows(4)
    data[row_index].update(changes)
    return Dataset.from_list(data)


@pytest.mark.parametrize("changes, message", [
    ({"chosen": ""}, r"row 3, field 'chosen': empty response"),
    ({"rejected": "   "}, r"row 3, field 'rejected': empty response"),
    ({"rejected": "same", "chosen": "same"}, r"row 3: chosen and rejected are identical \(1 of 4 "
                                             r"rows are: 3\); drop such rows, or with auxdpo "
                                             r"train read the file with dataset_format: "
                                             r"ultrafeedback"),
])
def test_row_errors_name_row_and_field(changes, message):
    with pytest.raises(ValueError, match=message):
        validate_preference_rows(_with(2, **changes))


def test_non_string_content_is_named():
    """Mixed types cannot form an Arrow table: raw rows are checked through RowTable."""
    data = [{"chosen": [{"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": "b"}]} for i in range(3)]
    data[1]["rejected"] = [{"role": "assistant", "content": 7}]
    with pytest.raises(ValueError, match=r"row 2, field 'rejected': message 0 content must be"):
        validate_preference_rows(RowTable(data))
    data = H.rows(3)
    data[2]["chosen"] = 5
    with pytest.raises(ValueError, match=r"row 3, field 'chosen': expected a string"):
        validate_preference_rows(RowTable(data))
    data = H.rows(3)
    del data[0]["prompt"]
    with pytest.raises(ValueError, match=r"row 1, field 'prompt': expected a string"):
        validate_preference_rows(RowTable(data))


def test_mixing_plain_text_and_conversations_is_named():
    data = H.rows(3)
    data[2]["chosen"] = [{"role": "assistant", "content": "7"}]
    with pytest.raises(ValueError, match=r"row 3, field 'chosen': a message list, but row 1 "
                                         r"field 'prompt' is plain text"):
        validate_preference_rows(RowTable(data))


def test_missing_columns_are_listed():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\]"):
        validate_preference_rows(Dataset.from_list([{"prompt": "p", "chosen": "a"}]))
    # Without a prompt column the shared prefix is the prompt, as in TRL; what is left must
    # still be a response.
    assert validate_preference_rows(Dataset.from_list([{"chosen": "q: a", "rejected": "q: b"}])) == 1
    with pytest.raises(ValueError, match="row 1, field 'chosen': empty response after the shared"):
        validate_preference_rows(Dataset.from_list([{"chosen": "q  ", "rejected": "q  x"}]))


@pytest.mark.parametrize("column, values, message", [
    ("pref_prob", [0.5, 1.5, 0.2, 0.1], r"row 2, field 'pref_prob': 1.5 is outside \[0.0, 1.0\]"),
    ("pref_prob", [0.5, 0.5, -0.1, 0.1], r"row 3, field 'pref_prob'"),
    ("pref_prob", [0.5, 0.5, 0.5, float("nan")], r"row 4, field 'pref_prob': expected a finite"),
    ("pref_prob", [float("inf"), 0.5, 0.5, 0.5], r"row 1, field 'pref_prob': expected a finite"),
    ("weight", [1.0, -2.0, 1.0, 1.0], r"row 2, field 'weight': -2.0 is outside"),
    ("weight", [1.0, 1.0, float("inf"), 1.0], r"row 3, field 'weight': expected a finite"),
    ("weight", [float("nan"), 1.0, 1.0, 1.0], r"row 1, field 'weight': expected a finite"),
    ("weight", [1.0, 1.0, 1.0, 1e9], r"row 4, field 'weight': 1000000000.0 is outside"),
])
def test_soft_label_and_weight_ranges(column, values, message):
    with pytest.raises(ValueError, match=message):
        validate_preference_rows(H.dataset(4, **{column: values}))


@pytest.mark.parametrize("column, value, message", [
    ("weight", float("nan"), r"^row 3, field 'weight': expected a finite number, got nan$"),
    ("weight", 1e300, r"^row 3, field 'weight': 1e\+300 is outside \[0.0, 1000000.0\]$"),
    ("pref_prob", float("nan"), r"^row 3, field 'pref_prob': expected a finite number"),
    ("weight", 2.0, r"^row 1, field 'weight': missing, but row 3 has one \(3 of 4 rows lack "
                    r"it\): give every row a value \(1: unweighted\) or none$"),
    ("pref_prob", 0.7, r"^row 1, field 'pref_prob': missing, but row 3 has one .*\(1: chosen "
                       r"preferred for sure\) or none$"),
], ids=["nan-weight", "huge-weight", "nan-label", "weight-on-one-row", "label-on-one-row"])
def test_a_column_on_some_rows_only_names_the_bad_row(column, value, message):
    """Rows without the column read as None: a bad value on row 3 is reported as row 3 (it
    was "row 1 ... got None"); a good one says which rows lack it."""
    rows = H.rows(4)
    rows[2][column] = value
    with pytest.raises(ValueError, match=message):
        validate_preference_rows(RowTable(rows))


def test_trainer_validates_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"row 2, field 'pref_prob'"):
        AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo"),
                      train_dataset=H.dataset(4, pref_prob=[0.5, 2.0, 0.5, 0.5]),
                      processing_class=H.tokenizer())


def test_long_prompts_are_dropped_with_a_logged_count(tmp_path, caplog):
    data = H.rows(6)
    data[1]["prompt"] = "x" * 80
    data[4]["prompt"] = "y" * 100
    with caplog.at_level(logging.WARNING, logger="auxdpo.train.trainer"):
        trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo", max_length=40),
                                train_dataset=Dataset.from_list(data),
                                processing_class=H.tokenizer())
    assert trainer.dropped_examples["train"] == 2
    assert len(trainer.train_dataset) == 4
    assert "dropped 2 of 6 examples" in caplog.text
    # the remaining rows are re-indexed densely for their offsets
    assert trainer.train_dataset["aux_index"] == [0, 1, 2, 3]


def test_collator_attaches_index_and_columns():
    def base(examples):
        return {"input_ids": torch.zeros(2 * len(examples), 3)}

    collate = AuxPreferenceCollator(base, pref_prob_column="p", weight_column="w")
    batch = collate([{"aux_index": 5, "p": 0.25, "w": 2}, {"aux_index": 1, "p": 1.0, "w": 1}])
    assert batch["aux_index"].tolist() == [5, 1]
    assert batch["pref_prob"].tolist() == [0.25, 1.0]
    assert batch["weight"].tolist() == [2.0, 1.0]


def test_conversational_rows_train(tmp_path):
    """Message lists (prompt inside chosen/rejected) go through TRL's chat-template path."""
    rows = [{"chosen": [{"role": "user", "content": f"hi {i}"},
                        {"role": "assistant", "content": f"hello {i}"}],
             "rejected": [{"role": "user", "content": f"hi {i}"},
                          {"role": "assistant", "content": "go away"}]} for i in range(4)]
    trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo", max_steps=1),
                            train_dataset=Dataset.from_list(rows),
                            processing_class=H.tokenizer())
    example = trainer.train_dataset[0]
    text = H.tokenizer().decode(example["prompt_ids"] + example["chosen_ids"])
    assert text.startswith("user: hi 0\nassistant: ") and "hello 0" in text
    trainer.train()
    assert trainer.state.global_step == 1
