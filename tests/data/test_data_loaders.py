"""Loaders on small fixtures written in each hub schema, compared with hand-written expectations."""

import datasets
import pytest

from auxdpo.data import (
    DataFormatError,
    format_mmlu_prompt,
    load_mmlu_pro,
    load_rewardbench2,
    load_ultrafeedback,
    mmlu_pro_pairs,
    rewardbench2_pairs,
)
from data_fixtures import (
    REAL_DATA,
    conversation,
    flat_ultrafeedback,
    h4_ultrafeedback,
    mmlu_pro_rows,
    rewardbench2_rows,
    rlhflow_ultrafeedback,
    write,
)

# ------------------------------------------------------------------ UltraFeedback


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_flat_ultrafeedback_every_extension(tmp_path, suffix):
    ds = load_ultrafeedback(write(tmp_path / f"uf{suffix}", flat_ultrafeedback()))
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["id", "prompt", "chosen", "rejected", "score_chosen",
                               "score_rejected"]
    assert ds[0] == {"id": "41", "prompt": "How do I boil an egg?",
                     "chosen": "Put it in boiling water for 9 minutes.",
                     "rejected": "Eggs are birds.", "score_chosen": 9.0, "score_rejected": 3.5}
    assert ds["id"] == ["41", "7"]


def test_h4_schema_takes_prompt_column_and_final_replies(tmp_path):
    ds = load_ultrafeedback(write(tmp_path / "h4.jsonl", h4_ultrafeedback()))
    assert ds.to_list() == [
        {"id": "pid0", "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.",
         "score_chosen": 8.0, "score_rejected": 2.0},
        {"id": "pid1", "prompt": "2+2?", "chosen": "4", "rejected": "5",
         "score_chosen": 8.0, "score_rejected": 3.0}]


def test_rlhflow_schema_prompt_is_the_user_turn(tmp_path):
    ds = load_ultrafeedback(write(tmp_path / "rl.json", rlhflow_ultrafeedback()))
    assert ds["prompt"] == ["Capital of France?", "Capital of France?", "Color of sky?"]
    assert ds["chosen"] == ["Paris.", "It is Paris.", "Blue."]
    assert ds["rejected"] == ["Lyon.", "Rome.", "Green."]
    assert ds["id"] == ["1", "2", "3"]  # no id in the schema: the 1-based row number
    assert ds["score_rejected"] == [2.0, 1.0, 1.5]


def test_hub_name_goes_through_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(h4_ultrafeedback())

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_ultrafeedback("HuggingFaceH4/ultrafeedback_binarized")
    assert calls == [("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")]
    assert ds["chosen"] == ["Hi!", "4"]
    load_ultrafeedback("RLHFlow/UltraFeedback-preference-standard")
    assert calls[-1] == ("RLHFlow/UltraFeedback-preference-standard", "train")


def test_schema_mismatch_names_file_row_and_field(tmp_path):
    rows = flat_ultrafeedback()
    del rows[1]["rejected"]
    path = write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: row 2, field 'rejected': missing"):
        load_ultrafeedback(path)


def test_rlhflow_disagreeing_user_turns_is_an_error(tmp_path):
    rows = rlhflow_ultrafeedback()
    rows[0]["rejected"] = conversation("Another question?", "Lyon.")
    with pytest.raises(DataFormatError, match="row 1, field 'rejected': user turn differs"):
        load_ultrafeedback(write(tmp_path / "rl.jsonl", rows))


def test_identical_pair_is_dropped_with_a_warning(tmp_path):
    rows = flat_ultrafeedback()
    rows[0]["rejected"] = rows[0]["chosen"]
    with pytest.warns(UserWarning, match="dropped 1 unusable rows"):
        ds = load_ultrafeedback(write(tmp_path / "uf.jsonl", rows))
    assert ds["id"] == ["7"]


# ------------------------------------------------------------------ RewardBench 2


def test_rewardbench2_best_of_n_rows(tmp_path):
    ds = load_rewardbench2(write(tmp_path / "rb2.parquet", rewardbench2_rows()))
    assert ds.column_names == ["id", "prompt", "chosen", "rejected", "subset", "num_correct"]
    assert ds["id"] == ["0", "1", "ref:5", "tied:5"]
    assert ds["num_correct"] == [1, 1, 1, 3]
    assert ds[1]["rejected"] == ["3", "4", "11"]


def test_rewardbench2_pairs_all_and_one(tmp_path):
    ds = load_rewardbench2(write(tmp_path / "rb2.json", rewardbench2_rows()))
    pairs = rewardbench2_pairs(ds)  # every chosen × rejected: 3 + 3 + 2 + 3·2
    assert len(pairs) == 14
    math_pairs = [p for p in pairs if p["prompt_id"] == "1"]
    assert [(p["chosen"], p["rejected"]) for p in math_pairs] == [("2", "3"), ("2", "4"),
                                                                 ("2", "11")]
    assert math_pairs[0]["id"] == "1/0-0" and math_pairs[0]["subset"] == "Math"
    one = rewardbench2_pairs(ds, mode="one", seed=3)
    assert len(one) == 4 and one["chosen"] == ["Yes.", "2", "Red.", "Red."]
    assert one.to_list() == rewardbench2_pairs(ds, mode="one", seed=3).to_list()
    for pair in one:
        row = ds[ds["id"].index(pair["prompt_id"])]
        assert pair["rejected"] in row["rejected"]


def test_rewardbench2_inconsistent_counts_and_bad_ties_id(tmp_path):
    rows = rewardbench2_rows()
    rows[0]["num_incorrect"] = 2
    rows[2]["id"] = "reference-5"
    with pytest.raises(DataFormatError) as info:
        load_rewardbench2(write(tmp_path / "rb2.jsonl", rows))
    message = str(info.value)
    assert "row 1, field 'num_incorrect': is 2 but the lists give 3" in message
    assert "row 3, field 'id': Ties rows need an id 'ref:N' or 'tied:N'" in message


def test_rewardbench2_chosen_must_be_a_list(tmp_path):
    rows = rewardbench2_rows()
    rows[1]["chosen"] = "2"
    with pytest.raises(DataFormatError, match="row 2, field 'chosen': expected a list"):
        load_rewardbench2(write(tmp_path / "rb2.jsonl", rows))


# ------------------------------------------------------------------ MMLU-Pro


def test_mmlu_pro_questions(tmp_path):
    ds = load_mmlu_pro(write(tmp_path / "mmlu.json", mmlu_pro_rows()))
    assert ds.column_names == ["id", "question", "options", "answer_index", "category"]
    assert ds["answer_index"] == [1, 0, 2]
    assert ds[1] == {"id": "1", "question": "H2O is?", "options": ["water", "salt", "sand"],
                     "answer_index": 0, "category": "chemistry"}


def test_mmlu_prompt_format():
    assert format_mmlu_prompt("2+2?", ["3", "4", "5"]) == (
        "Question: 2+2?\nOptions:\nA. 3\nB. 4\nC. 5\nAnswer:")


def test_mmlu_pro_pairs_sample_and_all(tmp_path):
    questions = load_mmlu_pro(write(tmp_path / "mmlu.jsonl", mmlu_pro_rows()))
    every = mmlu_pro_pairs(questions, mode="all")
    assert len(every) == 3 + 2 + 9
    assert [p["rejected"] for p in every if p["question_id"] == "0"] == ["3", "5", "22"]
    assert set(every["chosen"]) == {"4", "water", "Jupiter"}
    sampled = mmlu_pro_pairs(questions, mode="sample", seed=11)
    assert len(sampled) == 3
    assert sampled["category"] == ["math", "chemistry", "physics"]
    for pair in sampled:
        assert (pair["question_id"], pair["rejected"]) in {
            (p["question_id"], p["rejected"]) for p in every}
    # the draw depends on (seed, question) only: reversing the rows changes nothing
    reversed_pairs = mmlu_pro_pairs(list(reversed(questions.to_list())), seed=11)
    assert sorted(reversed_pairs["id"]) == sorted(sampled["id"])
    seeds = {tuple(mmlu_pro_pairs(questions, seed=s)["rejected"]) for s in range(8)}
    assert len(seeds) > 1  # the seed matters


def test_mmlu_duplicate_of_correct_option_is_never_rejected(tmp_path):
    rows = mmlu_pro_rows()
    rows[0]["options"] = ["4", "4", "5"]  # as question 8584 of the real test split
    rows[0]["answer"], rows[0]["answer_index"] = "A", 0
    pairs = mmlu_pro_pairs(load_mmlu_pro(write(tmp_path / "m.json", rows)), mode="all")
    assert [p["rejected"] for p in pairs if p["question_id"] == "0"] == ["5"]


@pytest.mark.parametrize("change, field, message", [
    ({"answer": "C"}, "answer_index", "1 disagrees with answer 'C'"),
    ({"options": ["only", "two"]}, "options", "has 2 options; expected 3 to 10"),
    ({"answer": "Z", "answer_index": None}, "answer", "expected a letter A-J"),
    ({"answer_index": 7, "answer": None}, "answer_index", "points past the 4 options"),
    ({"category": 3}, "category", "expected a string, got int"),
])
def test_mmlu_schema_errors(tmp_path, change, field, message):
    rows = mmlu_pro_rows()
    rows[0].update(change)
    with pytest.raises(DataFormatError, match=f"row 1, field '{field}': {message}"):
        load_mmlu_pro(write(tmp_path / "m.json", rows))


@pytest.mark.skipif(not (REAL_DATA / "mmlu_pro" / "validation.json").exists(),
                    reason="real rows absent")
def test_real_mmlu_pro_validation_rows():
    questions = load_mmlu_pro(REAL_DATA / "mmlu_pro" / "validation.json")
    assert len(questions) == 70
    assert len(set(questions["category"])) == 14
    assert len(mmlu_pro_pairs(questions)) == 70


@pytest.mark.skipif(not (REAL_DATA / "ultrafeedback" / "train_1k.jsonl").exists(),
                    reason="real rows absent")
def test_real_ultrafeedback_rows_drop_six_unusable():
    with pytest.warns(UserWarning, match="dropped 6 unusable rows"):
        ds = load_ultrafeedback(REAL_DATA / "ultrafeedback" / "train_1k.jsonl")
    assert len(ds) == 994
    assert all(c != r for c, r in zip(ds["chosen"], ds["rejected"]))
