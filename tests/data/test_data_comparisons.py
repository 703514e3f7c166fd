"""Multi-comparison sets → pairs: hand-expanded fixtures, soft labels, ties, errors, statistics."""

import datasets
import pytest

from auxdpo.data import (
    DataFormatError,
    ExpansionOptions,
    comparison_stats,
    load_comparisons,
)
from auxdpo.data.comparisons import soft_label
from data_fixtures import MULTI_FIXTURES, fixture_rows, write

# σ(x) = 1 / (1 + e^(−x)), to 16 digits
SIGMA_1, SIGMA_1_5, SIGMA_2, SIGMA_3 = (0.7310585786300049, 0.8175744761936437,
                                        0.8807970779778823, 0.9525741268224334)


def _pairs(ds):
    return [(p["id"], p["chosen"], p["rejected"]) for p in ds]


# ------------------------------------------------------------------ scored-responses


def test_scored_responses_every_pair_ties_dropped():
    ds = load_comparisons(MULTI_FIXTURES["scored-responses"], "scored-responses")
    assert ds.column_names == ["id", "source_row", "prompt", "chosen", "rejected",
                               "score_chosen", "score_rejected"]
    # row 1 scores (1, 3, 2, 2): 6 pairs less the tie between "four" and "22"
    assert _pairs(ds) == [
        ("q1/1-0", "4", "5"), ("q1/2-0", "four", "5"), ("q1/3-0", "22", "5"),
        ("q1/1-2", "4", "four"), ("q1/1-3", "4", "22"),
        ("2/0-1", "fast", "slow"), ("2/2-0", "rapid", "fast"), ("2/2-1", "rapid", "slow")]
    assert ds["source_row"] == [1] * 5 + [2] * 3
    assert ds["prompt"][:5] == ["What is 2+2?"] * 5
    assert ds["score_chosen"] == [3.0, 2.0, 2.0, 3.0, 3.0, 0.5, 2.0, 2.0]
    assert ds["score_rejected"] == [1.0, 1.0, 1.0, 2.0, 2.0, -1.0, 0.5, -1.0]


def test_scored_responses_ties_kept_as_one_half():
    ds = load_comparisons(MULTI_FIXTURES["scored-responses"], "scored-responses",
                          options=ExpansionOptions(ties="half"))
    assert len(ds) == 9 and ds.column_names[-1] == "pref_prob"
    tie = ds[5]
    assert (tie["id"], tie["chosen"], tie["rejected"], tie["pref_prob"]) == (
        "q1/2-3", "four", "22", 0.5)
    assert ds["pref_prob"] == [1.0] * 5 + [0.5] + [1.0] * 3  # hard labels elsewhere


def test_soft_labels_by_hand():
    ds = load_comparisons(MULTI_FIXTURES["scored-responses"], "scored-responses",
                          options=ExpansionOptions(temperature=1.0))
    # score differences 2, 1, 1, 1, 1 | 1.5, 1.5, 3
    assert ds["pref_prob"] == pytest.approx(
        [SIGMA_2, SIGMA_1, SIGMA_1, SIGMA_1, SIGMA_1, SIGMA_1_5, SIGMA_1_5, SIGMA_3], rel=1e-14)
    halved = load_comparisons(MULTI_FIXTURES["scored-responses"], "scored-responses",
                              options=ExpansionOptions(temperature=2.0, ties="half"))
    assert halved["pref_prob"][:6] == pytest.approx([SIGMA_1] + [0.6224593312018546] * 4
                                                    + [0.5], rel=1e-14)  # σ(1), σ(1/2), tie
    assert soft_label(-3.0, 0.0, 1.0) == pytest.approx(1 - SIGMA_3, rel=1e-14)
    assert soft_label(0.0, 800.0, 1.0) == 0.0 and soft_label(800.0, 0.0, 1.0) == 1.0


def test_repeated_text_missing_score_and_all_ties(tmp_path):
    rows = [{"prompt": "p", "responses": ["a", "b", "a"], "scores": [2, 1, 5]},
            {"prompt": "q", "responses": ["x", "y", "z"], "scores": [1, None, 2]},
            {"prompt": "r", "responses": ["u", "v"], "scores": [4, 4]}]
    path = write(tmp_path / "s.jsonl", rows)
    with pytest.warns(UserWarning, match="left out 3 responses or rows on 3 rows"):
        ds = load_comparisons(path, "scored-responses")
    # row 1: the second "a" is left out (the first keeps score 2); row 2: "y" has no score
    assert _pairs(ds) == [("1/0-1", "a", "b"), ("2/2-0", "z", "x")]


@pytest.mark.parametrize("change, message", [
    ({"scores": [1, 2]}, "row 1, field 'scores': has 2 entries for 4 responses"),
    ({"scores": [1, "high", 2, 2]}, "row 1, field 'scores\\[1\\]': expected a finite number"),
    ({"responses": ["5", 4, "four", "22"]}, "row 1, field 'responses\\[1\\]': expected a string"),
    ({"prompt": None}, "row 1, field 'prompt': missing"),
])
def test_scored_responses_schema_errors(tmp_path, change, message):
    rows = fixture_rows("scored-responses")
    rows[0].update(change)
    with pytest.raises(DataFormatError, match=f"s.jsonl: {message}"):
        load_comparisons(write(tmp_path / "s.jsonl", rows), "scored-responses")


# ------------------------------------------------------------------ openbmb/UltraFeedback


def test_openbmb_fine_grained_score_expansion():
    ds = load_comparisons(MULTI_FIXTURES["openbmb-ultrafeedback"], "openbmb-ultrafeedback")
    # fine-grained scores (1, 2, 2, 3) and (4.75, 3.5, 4.75, 2): 5 + 5 pairs
    assert [p[0] for p in _pairs(ds)] == ["1/1-0", "1/2-0", "1/3-0", "1/3-1", "1/3-2",
                                         "2/0-1", "2/0-3", "2/2-1", "2/1-3", "2/2-3"]
    assert ds[0]["prompt"] == "Name a fruit that is yellow."
    assert (ds[0]["chosen"], ds[0]["rejected"]) == ("A banana is yellow.", "A tomato.")
    assert ds[7]["chosen"] == "« Merci »." and ds[7]["score_chosen"] == 4.75
    assert ds["source_row"] == [1] * 5 + [2] * 5


def test_openbmb_overall_score_and_ties():
    overall = load_comparisons(MULTI_FIXTURES["openbmb-ultrafeedback"], "openbmb-ultrafeedback",
                               options=ExpansionOptions(score_field="overall_score"))
    # overall scores (3, 6.5, 7, 8.5) have no tie; (9, 7.5, 9, 2) one
    assert len(overall) == 11 and "1/2-1" in overall["id"]
    half = load_comparisons(MULTI_FIXTURES["openbmb-ultrafeedback"], "openbmb-ultrafeedback",
                            options=ExpansionOptions(ties="half"))
    assert len(half) == 12 and sorted(half["pref_prob"]) == [0.5, 0.5] + [1.0] * 10


def test_openbmb_nan_score_leaves_the_response_out(tmp_path):
    rows = fixture_rows("openbmb-ultrafeedback")
    rows[0]["completions"][3]["fine-grained_score"] = float("nan")
    path = write(tmp_path / "ob.parquet", rows)
    with pytest.warns(UserWarning, match=r"row 1, field 'completions\[3\].fine-grained_score'"):
        ds = load_comparisons(path, "openbmb-ultrafeedback")
    assert [i for i in ds["id"] if i.startswith("1/")] == ["1/1-0", "1/2-0"]


def test_openbmb_missing_response_is_a_schema_error(tmp_path):
    rows = fixture_rows("openbmb-ultrafeedback")
    del rows[1]["completions"][2]["response"]
    with pytest.raises(DataFormatError,
                       match=r"ob.json: row 2, field 'completions\[2\].response': missing"):
        load_comparisons(write(tmp_path / "ob.json", rows), "openbmb-ultrafeedback")


def test_hub_names_go_through_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(fixture_rows("openbmb-ultrafeedback"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_comparisons("openbmb/UltraFeedback", "openbmb-ultrafeedback")) == 10
    assert calls == [("openbmb/UltraFeedback", "train")]


# ------------------------------------------------------------------ RLHFlow


def test_rlhflow_rows_keep_identical_texts_for_repeated_responses():
    ds = load_comparisons(MULTI_FIXTURES["rlhflow-ultrafeedback"], "rlhflow-ultrafeedback")
    assert len(ds) == 8 and ds["source_row"] == list(range(1, 9))  # row 9 is a tie
    assert ds["id"] == [str(row) for row in range(1, 9)]
    rows = [i for i, p in enumerate(ds) if "Smokey." in (p["chosen"], p["rejected"])]
    assert [ds[i]["source_row"] for i in rows] == [1, 4, 5]
    assert {ds[i]["prompt"] for i in range(6)} == {"Suggest a name for a grey cat."}
    soft = load_comparisons(MULTI_FIXTURES["rlhflow-ultrafeedback"], "rlhflow-ultrafeedback",
                            options=ExpansionOptions(ties="half", temperature=2.0))
    # score differences 1, 3, 4, 2, 3, 1 (prompt 1) then 2, 2, 0
    assert soft["pref_prob"][-3:] == pytest.approx([SIGMA_1, SIGMA_1, 0.5], rel=1e-14)
    assert soft["pref_prob"][3] == pytest.approx(SIGMA_1, rel=1e-14)


def test_rlhflow_scores_are_required_and_must_agree(tmp_path):
    rows = fixture_rows("rlhflow-ultrafeedback")
    rows[0]["chosen_score"], rows[0]["rejected_score"] = 1.0, 5.0
    with pytest.warns(UserWarning, match="row 1, field 'chosen_score': 1 is below"):
        ds = load_comparisons(write(tmp_path / "r.jsonl", rows), "rlhflow-ultrafeedback")
    assert ds["source_row"][0] == 2
    del rows[2]["rejected_score"]
    with pytest.raises(DataFormatError, match="row 3, field 'rejected_score': missing"):
        load_comparisons(write(tmp_path / "r.jsonl", rows), "rlhflow-ultrafeedback")


# ------------------------------------------------------------------ options, statistics


@pytest.mark.parametrize("kwargs", [{"ties": "keep"}, {"temperature": 0.0},
                                    {"temperature": float("inf")}, {"score_field": "rating"}])
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        ExpansionOptions(**kwargs)


def test_comparison_stats_by_hand():
    stats = comparison_stats([("p", "a", "b"), ("p", "a", "c"), ("p", "b", "c"),
                              ("q", "x", "y"), ("q", "a", "y")])
    # responses (p,a) 2, (p,b) 2, (p,c) 2, (q,x) 1, (q,y) 2, (q,a) 1: the same text under
    # another prompt is another response
    assert stats.as_dict() == {"prompts": 2, "responses": 6, "responses_per_prompt": 3.0,
                               "pairs_per_response": 10 / 6, "share_in_2_or_more": 4 / 6}
    assert comparison_stats([]).responses == 0


def test_check_formats_list_every_multi_format():
    from auxdpo.data.check import FORMATS, PAIRWISE_FORMATS
    from auxdpo.data.comparisons import MULTI_FORMATS

    assert FORMATS == PAIRWISE_FORMATS + MULTI_FORMATS  # check.py spells them out to stay light


def test_training_pairs_from_pairwise_ultrafeedback(tmp_path):
    from auxdpo.data.formats import load_training_pairs
    from data_fixtures import h4_ultrafeedback

    path = write(tmp_path / "h4.jsonl", h4_ultrafeedback())
    assert load_training_pairs(path, "ultrafeedback")["chosen"] == ["Hi!", "4"]
    with pytest.raises(ValueError, match="needs a scored format"):
        load_training_pairs(path, "ultrafeedback", options=ExpansionOptions(temperature=1.0))
