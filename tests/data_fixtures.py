"""Small rows in each hub schema, and writers for .json/.jsonl/.parquet (used by data tests)."""

import json
from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def conversation(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def flat_ultrafeedback():
    """As ../shared/data/ultrafeedback/train_1k.jsonl."""
    return [
        {"prompt": "How do I boil an egg?", "chosen": "Put it in boiling water for 9 minutes.",
         "rejected": "Eggs are birds.", "source_index": 41,
         "metadata": {"score_chosen": 9.0, "score_rejected": 3.5}},
        {"prompt": "Name a prime.", "chosen": "7", "rejected": "8", "source_index": 7,
         "metadata": {"score_chosen": 10.0, "score_rejected": 1.0}},
    ]


def h4_ultrafeedback():
    """As HuggingFaceH4/ultrafeedback_binarized (train_prefs)."""
    rows = []
    for index, (prompt, good, bad) in enumerate([("Say hi.", "Hi!", "No."),
                                                 ("2+2?", "4", "5")]):
        rows.append({"prompt": prompt, "prompt_id": f"pid{index}",
                     "chosen": conversation(prompt, good), "rejected": conversation(prompt, bad),
                     "messages": conversation(prompt, good), "score_chosen": 8.0,
                     "score_rejected": 2.0 + index})
    return rows


def rlhflow_ultrafeedback():
    """As RLHFlow/UltraFeedback-preference-standard: no prompt column."""
    return [
        {"chosen": conversation("Capital of France?", "Paris."),
         "rejected": conversation("Capital of France?", "Lyon."),
         "chosen_score": 5.0, "rejected_score": 2.0},
        {"chosen": conversation("Capital of France?", "It is Paris."),
         "rejected": conversation("Capital of France?", "Rome."),
         "chosen_score": 4.5, "rejected_score": 1.0},
        {"chosen": conversation("Color of sky?", "Blue."),
         "rejected": conversation("Color of sky?", "Green."),
         "chosen_score": 5.0, "rejected_score": 1.5},
    ]


def rewardbench2_rows():
    """As allenai/reward-bench-2 (test): 1-vs-3 rows and a Ties ref/tied couple."""
    def row(id_, subset, prompt, chosen, rejected):
        return {"id": id_, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                "num_correct": len(chosen), "num_incorrect": len(rejected),
                "total_completions": len(chosen) + len(rejected), "models": ["m"] * 4,
                "subset": subset, "additional_metadata": {"source": "fixture"}}

    return [
        row("0", "Factuality", "Is water wet?", ["Yes."], ["No.", "Maybe.", "Purple."]),
        row("1", "Math", "1+1?", ["2"], ["3", "4", "11"]),
        row("ref:5", "Ties", "Name a primary color.", ["Red."], ["Green.", "Pink."]),
        row("tied:5", "Ties", "Name a primary color.", ["Red.", "Blue.", "Yellow."],
            ["Green.", "Pink."]),
    ]


def mmlu_pro_rows():
    """As TIGER-Lab/MMLU-Pro and ../shared/data/mmlu_pro/*.json."""
    return [
        {"question_id": 0, "question": "2+2?", "options": ["3", "4", "5", "22"], "answer": "B",
         "answer_index": 1, "cot_content": "", "category": "math", "src": "x"},
        {"question_id": 1, "question": "H2O is?", "options": ["water", "salt", "sand"],
         "answer": "A", "answer_index": 0, "cot_content": "", "category": "chemistry", "src": "x"},
        {"question_id": 2, "question": "Largest planet?",
         "options": ["Mars", "Venus", "Jupiter", "Earth", "Mercury", "Saturn", "Uranus",
                     "Neptune", "Pluto", "Moon"], "answer": "C", "answer_index": 2,
         "cot_content": "", "category": "physics", "src": "x"},
    ]


def write(path, rows):
    """Write rows as .json (list), .jsonl or .parquet, by the extension of ``path``."""
    path = Path(path)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise AssertionError(path)
    return path


FIXTURES = Path(__file__).resolve().parent / "fixtures"
# multi-comparison fixture files, in each source's real schema with invented text
MULTI_FIXTURES = {"rlhflow-ultrafeedback": FIXTURES / "rlhflow_ultrafeedback.jsonl",
                  "openbmb-ultrafeedback": FIXTURES / "openbmb_ultrafeedback.jsonl",
                  "scored-responses": FIXTURES / "scored_responses.jsonl"}


def fixture_rows(fmt):
    """The rows of the fixture file of a multi-comparison format."""
    return [json.loads(line) for line in MULTI_FIXTURES[fmt].read_text().splitlines()]
