"""Train/held-out sets of the ID and OOD settings, and the smoke preset's synthetic data."""

import json
import re

import pytest

from auxdpo.harness.protocol.recipe import DataSpec
from auxdpo.harness.protocol.smoke import SYNTHETIC_TAG, synthetic_rewardbench2_rows
from auxdpo.harness.protocol.tasks import load_protocol_data, row_chars, train_pairs_for


def _mmlu_file(tmp_path, n=20):
    rows = [{"question_id": i, "question": f"Question number {i}?" + "x" * (i % 4) * 50,
             "options": [f"right {i}", f"wrong {i}a", f"wrong {i}b"], "answer": "A",
             "answer_index": 0, "category": "law" if i % 2 else "math"} for i in range(n)]
    path = tmp_path / "mmlu.json"
    path.write_text(json.dumps(rows))
    return str(path)


def _uf_file(tmp_path, n=8):
    path = tmp_path / "uf.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"prompt {i}" + "y" * 40 * (i % 2),
                                          "chosen": f"good {i}", "rejected": f"bad {i}"})
                              for i in range(n)))
    return str(path)


def test_id_and_ood_share_held_out_rows_and_never_train_on_them(tmp_path):
    spec = DataSpec(mmlu_pro=_mmlu_file(tmp_path), rewardbench2="synthetic",
                    ultrafeedback=_uf_file(tmp_path), split_seed=3)
    data = load_protocol_data(spec, ["mmlu-pro", "rewardbench2"], ["id", "ood"],
                              synthetic_dir=str(tmp_path / "out"))
    mmlu = data.held_out["mmlu-pro"]
    assert len(mmlu.rows) == 4  # round(0.2 · 20 questions)
    held_prompts = {pair["prompt"] for pair in mmlu.pairs}
    train_prompts = {pair["prompt"] for pair in train_pairs_for(data, "mmlu-pro", "id")}
    assert len(train_prompts) == 16 and not held_prompts & train_prompts
    assert train_pairs_for(data, "mmlu-pro", "ood") == train_pairs_for(data, "rewardbench2",
                                                                       "ood")
    assert [p["prompt"] for p in data.ood_train][:2] == ["prompt 0", "prompt 1" + "y" * 40]
    assert set(data.ood_train[0]) == {"prompt", "chosen", "rejected"}
    rb2 = data.held_out["rewardbench2"]
    assert all(row["prompt"].startswith(SYNTHETIC_TAG) for row in rb2.rows)
    rb2_train = {p["prompt"] for p in train_pairs_for(data, "rewardbench2", "id")}
    assert not rb2_train & {row["prompt"] for row in rb2.rows}
    assert (tmp_path / "out" / "rewardbench2_SYNTHETIC.json").exists()
    with pytest.raises(ValueError, match="setting"):
        train_pairs_for(data, "mmlu-pro", "both")


def test_length_and_count_limits(tmp_path):
    spec = DataSpec(mmlu_pro=_mmlu_file(tmp_path), ultrafeedback=_uf_file(tmp_path),
                    max_chars=150, max_rows=6, max_ood_prompt_chars=20, max_ood_pairs=3)
    data = load_protocol_data(spec, ["mmlu-pro"], ["id", "ood"])
    held, train = data.held_out["mmlu-pro"], data.id_train["mmlu-pro"]
    assert len(held.rows) + len({p["prompt"] for p in train}) == 6
    assert all(row_chars(row, "mmlu-pro") <= 150 for row in held.rows)
    kept = {row["question"] for row in held.rows} | {p["prompt"].split("\n")[0][10:] for p in train}
    numbers = {int(re.search(r"number (\d+)\?", t).group(1)) for t in kept}
    assert numbers < {i for i in range(20) if i % 4 in (0, 1)}  # 6 of the 10 short ones
    ood = [p["prompt"] for p in data.ood_train]
    assert len(ood) == 3 and set(ood) < {f"prompt {i}" for i in (0, 2, 4, 6)}
    assert ood == sorted(ood)  # the sample keeps file order
    again = load_protocol_data(spec, ["mmlu-pro"], ["id", "ood"])
    assert again.id_train == data.id_train and again.ood_train == data.ood_train


def test_missing_local_file_explains_where_data_lives(tmp_path):
    spec = DataSpec(mmlu_pro=str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="AUXDPO_DATA_DIR"):
        load_protocol_data(spec, ["mmlu-pro"], ["id"])


def test_synthetic_rewardbench2_is_valid_hub_schema(tmp_path):
    from auxdpo.data import check_file
    from auxdpo.harness.protocol.smoke import write_synthetic_rewardbench2

    path = write_synthetic_rewardbench2(str(tmp_path / "rb2.json"))
    report = check_file(path, "rewardbench2")
    assert report.ok, report.as_text()
    rows = synthetic_rewardbench2_rows()
    subsets = {row["subset"] for row in rows}
    assert subsets == {"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"}
    ties = {row["id"]: row for row in rows if row["subset"] == "Ties"}
    # ref:N and tied:N share their prompt, so a split by prompt keeps each pair together
    assert all(ties[f"ref:{n}"]["prompt"] == ties[f"tied:{n}"]["prompt"] for n in range(4))
    assert report.pairs == sum(len(r["chosen"]) * len(r["rejected"]) for r in rows)


def test_ood_training_on_a_multi_comparison_set(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from data_fixtures import MULTI_FIXTURES

    spec = DataSpec(ultrafeedback=str(MULTI_FIXTURES["openbmb-ultrafeedback"]),
                    dataset_format="openbmb-ultrafeedback", dataset_ties="half")
    data = load_protocol_data(spec, [], ["ood"])
    # 2 prompts x 6 pairs of 4 completions, the two ties kept with soft label 1/2
    assert len(data.ood_train) == 12
    assert set(data.ood_train[0]) == {"prompt", "chosen", "rejected", "pref_prob"}
    assert sorted(p["pref_prob"] for p in data.ood_train) == [0.5, 0.5] + [1.0] * 10
    with pytest.raises(ValueError, match="data.dataset_format must be one of"):
        DataSpec(dataset_format="mmlu-pro")
    with pytest.raises(ValueError, match="data.ultrafeedback_\\*: ties must be one of"):
        DataSpec(dataset_ties="keep")
