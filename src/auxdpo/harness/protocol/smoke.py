"""The ``smoke`` preset: the whole protocol on a tiny random model and a few hundred rows.

Real rows come from the folder of local copies named by ``AUXDPO_DATA_DIR``
(``mmlu_pro/test.json``, ``ultrafeedback/train_1k.jsonl``); when those files are absent the preset stops with a message naming them. RewardBench 2 has no
local copy, so the preset writes a small **synthetic** set in the hub schema
(``rewardbench2_SYNTHETIC.json`` in the output folder; every prompt starts with
``[SYNTHETIC]``): templated arithmetic questions spread over the six subsets, with Ties rows
paired as ``ref:N`` / ``tied:N``. Its numbers test the pipeline, not any model.
"""

from __future__ import annotations

import json
import os
import random

from auxdpo.files import atomic_write_text

__all__ = ["SYNTHETIC_TAG", "synthetic_rewardbench2_rows", "write_synthetic_rewardbench2",
           "smoke_recipe_dict", "smoke_data_missing"]

SYNTHETIC_TAG = "[SYNTHETIC]"
_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus")


def _wrong(rng: random.Random, right: int, count: int) -> list[int]:
    values: list[int] = []
    while len(values) < count:
        value = right + rng.choice([-1, 1]) * rng.randint(1, 9)
        if value not in values:
            values.append(value)
    return values


def synthetic_rewardbench2_rows(per_subset: int = 8, ties: int = 4, seed: int = 0) -> list[dict]:
    """Rows in RewardBench 2's hub schema: 1 chosen vs 3 rejected per non-Ties prompt; Ties:
    ``ref:N`` (1 correct, 3 wrong) and ``tied:N`` (3 equally correct phrasings, 3 wrong)."""
    rng = random.Random(seed)
    rows = []
    for subset in _SUBSETS:
        for k in range(per_subset):
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            wrong = _wrong(rng, a + b, 3)
            rows.append({"id": f"{subset.lower().replace(' ', '-')}-{k}",
                         "prompt": f"{SYNTHETIC_TAG} {subset}: what is {a}+{b}?",
                         "chosen": [f"{a + b}"], "rejected": [f"{w}" for w in wrong],
                         "num_correct": 1, "num_incorrect": 3, "total_completions": 4,
                         "subset": subset})
    for n in range(ties):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        wrong = _wrong(rng, a + b, 3)
        prompt = f"{SYNTHETIC_TAG} Ties: name a number equal to {a}+{b}."
        rows.append({"id": f"ref:{n}", "prompt": prompt, "chosen": [f"{a + b}"],
                     "rejected": [f"{w}" for w in wrong], "num_correct": 1,
                     "num_incorrect": 3, "total_completions": 4, "subset": "Ties"})
        rows.append({"id": f"tied:{n}", "prompt": prompt,
                     "chosen": [f"{a + b}", f"{a + b}.", f"It is {a + b}"],
                     "rejected": [f"{w}" for w in wrong], "num_correct": 3,
                     "num_incorrect": 3, "total_completions": 6, "subset": "Ties"})
    return rows


def write_synthetic_rewardbench2(path: str, **options) -> str:
    """Write :func:`synthetic_rewardbench2_rows` as a JSON list (atomically); return the path."""
    atomic_write_text(path, json.dumps(synthetic_rewardbench2_rows(**options), indent=1) + "\n")
    return path


def smoke_recipe_dict() -> dict:
    """The smoke preset as a recipe mapping (see docs/protocol.md for its measured time)."""
    from auxdpo.data.schema import local_data_path

    return {
        "name": "smoke",
        "model": {"name_or_path": "tiny-llama", "tiny_num_layers": 4, "tiny_hidden_size": 32},
        "data": {"mmlu_pro": local_data_path("mmlu_pro/test.json"),
                 "rewardbench2": "synthetic",
                 "ultrafeedback": local_data_path("ultrafeedback/train_1k.jsonl"),
                 "max_rows": 100, "max_ood_pairs": 64, "max_chars": 280,
                 "max_ood_prompt_chars": 160, "split_seed": 0},
        # two epochs: an offset δ changes after a step that saw its response and acts when the
        # response is seen again: in a later pair (response keying) or on the second pass
        "train": {"beta": 0.1, "learning_rate": 2e-3, "num_train_epochs": 2, "batch_size": 16,
                  "max_length": 288},
        "eval": {"batch_size": 32},
        "grid": {"methods": ["dpo", "auxdpo", "ipo", "dpop"], "settings": ["id", "ood"],
                 "datasets": ["mmlu-pro", "rewardbench2"], "capacities": ["50%", "100%"],
                 "seeds": 2},
        "estimates": {"note": "measured on 2 CPU cores, see docs/protocol.md"},
    }


def smoke_data_missing(recipe_values: dict) -> list[str]:
    """The real-data files the smoke preset needs that do not exist (empty: ready to run)."""
    data = recipe_values["data"]
    return [data[key] for key in ("mmlu_pro", "ultrafeedback") if not os.path.exists(data[key])]
