"""``dataset_format``: which loader reads a file, and refusals of options it cannot honour.

Every format through ``auxdpo train``'s loader is tested in tests/train/test_train_formats.py.
"""

from __future__ import annotations

import pytest

from auxdpo.data.comparisons import MULTI_FORMATS, ExpansionOptions
from auxdpo.data.formats import TRAIN_FORMATS, load_training_pairs
from data_fixtures import MULTI_FIXTURES, flat_ultrafeedback, write

SCORED = MULTI_FIXTURES["scored-responses"]


def test_formats_are_pairwise_ultrafeedback_and_every_multi_format():
    assert TRAIN_FORMATS == ("ultrafeedback", *MULTI_FORMATS)
    with pytest.raises(ValueError) as exc:
        load_training_pairs(SCORED, "rewardbench2")
    assert str(exc.value) == (f"dataset_format must be one of {', '.join(TRAIN_FORMATS)}; "
                              "got 'rewardbench2'")


def test_ultrafeedback_takes_no_config(tmp_path):
    path = write(tmp_path / "uf.jsonl", flat_ultrafeedback())
    assert load_training_pairs(path, "ultrafeedback")["id"] == ["41", "7"]
    with pytest.raises(ValueError, match="^dataset_format ultrafeedback takes no dataset_config$"):
        load_training_pairs(path, "ultrafeedback", config="default")


def test_soft_labels_land_in_the_named_column_or_are_refused_without_one():
    soft = ExpansionOptions(temperature=1.0)
    default = load_training_pairs(SCORED, "scored-responses", options=soft)
    renamed = load_training_pairs(SCORED, "scored-responses", options=soft,
                                  pref_prob_column="p_label")
    assert "pref_prob" in default.column_names and "pref_prob" not in renamed.column_names
    assert renamed["p_label"] == default["pref_prob"] and len(default) == 8
    with pytest.raises(ValueError, match="need pref_prob_column; it is null"):
        load_training_pairs(SCORED, "scored-responses", options=soft, pref_prob_column=None)
    hard = load_training_pairs(SCORED, "scored-responses", pref_prob_column=None)
    assert "pref_prob" not in hard.column_names and len(hard) == 8
