"""UltraFeedback rows of three schemas into one: ids, scores, conversations' problems.

Loading files of each schema and their errors is tested in test_data_loaders.py.
"""

from __future__ import annotations

from auxdpo.data.ultrafeedback import PAIR_COLUMNS, hub_split, normalize_ultrafeedback
from data_fixtures import conversation


def test_hub_split():
    assert hub_split("HuggingFaceH4/ultrafeedback_binarized") == "train_prefs"
    assert hub_split("RLHFlow/UltraFeedback-preference-standard") == "train"


def test_ids_and_scores_come_from_whichever_schema_names_them():
    records = [
        (1, {"prompt": "p", "chosen": "a", "rejected": "b", "prompt_id": "x", "source_index": 4,
             "score_chosen": 9, "score_rejected": True}),
        (2, {"prompt": "p", "chosen": "a", "rejected": "b", "source_index": 4, "id": "z",
             "chosen_score": 2.5, "rejected_score": 1}),
        (3, {"prompt": "p", "chosen": "a", "rejected": "b", "id": 11,
             "metadata": {"score_chosen": 3.0}}),
        (5, {"prompt": "p", "chosen": "a", "rejected": "b", "metadata": "none"}),
    ]
    items, problems = normalize_ultrafeedback(records)
    assert problems == []
    assert [tuple(item) for item in items] == [PAIR_COLUMNS] * 4
    assert [(i["id"], i["score_chosen"], i["score_rejected"]) for i in items] == [
        ("x", 9.0, None), ("4", 2.5, 1.0), ("11", 3.0, None), ("5", None, None)]


def test_conversation_rows_report_each_unusable_reply():
    system = [{"role": "system", "content": "Be kind."}]
    records = [
        (1, {"prompt": "Hi?", "chosen": system + conversation("Hi?", "Hello."),
             "rejected": conversation("Hi?", "Go.")}),
        (2, {"chosen": conversation("Q", "  "), "rejected": conversation("Q", "A")}),
        (3, {"chosen": conversation(" ", "a"), "rejected": conversation(" ", "b")}),
        (4, {"prompt": "Q", "chosen": conversation("Q", "same"),
             "rejected": conversation("Q", "same")}),
        (5, {"chosen": conversation("Q", "a"), "rejected": [{"role": "user", "content": "Q"}]}),
    ]
    items, problems = normalize_ultrafeedback(records)
    assert [(i["id"], i["prompt"], i["chosen"], i["rejected"]) for i in items] == [
        ("1", "Hi?", "Hello.", "Go.")]
    assert [(str(p), p.kind) for p in problems] == [
        ("row 2, field 'chosen': empty assistant reply", "content"),
        ("row 3, field 'prompt': empty user turn", "content"),
        ("row 4, field 'rejected': identical to chosen (no preference)", "content"),
        ("row 5, field 'rejected': last message is not from the assistant", "schema")]
