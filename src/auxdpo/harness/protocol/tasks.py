"""Train and held-out sets of the protocol, per evaluation data set and setting.

* ID: train on the 80% split (by prompt, :func:`auxdpo.data.id_sets`) of the evaluation data
  set itself; score on its held-out 20%.
* OOD: train on UltraFeedback; score on the *same* held-out 20% as ID (so ID and OOD numbers
  of one data set are comparable and share one base score).

The split seed is the recipe's ``data.split_seed``, not the training seed: every run of a
data set sees the same held-out rows.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from auxdpo.harness.evaluation.scoring import HeldOut
from auxdpo.harness.protocol.recipe import DataSpec

__all__ = ["HeldOut", "ProtocolData", "is_missing_local", "load_protocol_data", "train_pairs_for",
           "row_chars"]

PAIR_KEYS = ("prompt", "chosen", "rejected")


@dataclass
class ProtocolData:
    """Everything the runs of one recipe train and score on."""

    id_train: dict[str, list[dict]] = field(default_factory=dict)
    ood_train: list[dict] = field(default_factory=list)
    held_out: dict[str, HeldOut] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def row_chars(row: dict, dataset: str) -> int:
    """Characters of the prompt plus the longest answer (what ``data.max_chars`` bounds)."""
    if dataset == "mmlu-pro":
        from auxdpo.data.mmlu_pro import format_mmlu_prompt

        return len(format_mmlu_prompt(row["question"], row["options"])) + \
            max(len(option) for option in row["options"])
    if dataset == "rewardbench2":
        return len(row["prompt"]) + max(len(a) for a in list(row["chosen"]) + list(row["rejected"]))
    return len(row["prompt"]) + max(len(row["chosen"]), len(row["rejected"]))


def _limit(rows: list[dict], dataset: str, max_chars: int | None, limit: int | None,
           seed: int = 0, by_prompt: bool = False) -> list[dict]:
    if max_chars is not None:
        size = (lambda row: len(row["prompt"])) if dataset == "ultrafeedback" else \
            (lambda row: row_chars(row, dataset))
        rows = [row for row in rows if size(row) <= max_chars]
    if limit is not None and len(rows) > limit:
        # a seeded sample spread over the file (files are often sorted by subject), kept in
        # file order; a row's pick depends on its id (or prompt), not on its position
        def digest(key) -> bytes:
            return hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()

        def rank(row):
            key = digest(str(row.get("id") or row.get("prompt")))
            # multi-comparison sets: whole prompts are drawn, so that the responses the pairs
            # share (what AuxDPO's response-keyed offsets need) stay together
            return (digest(str(row["prompt"])), key) if by_prompt else key

        picked = {id(row) for row in sorted(rows, key=rank)[:limit]}
        rows = [row for row in rows if id(row) in picked]
    if not rows:
        raise ValueError(f"{dataset}: no rows left after the length filter ({max_chars} chars)")
    return rows


def is_missing_local(source: str) -> bool:
    """True for a local path (a .json/.jsonl/.parquet name, or one starting with / or .) that
    does not exist; anything else is a hub name or an existing path."""
    looks_local = os.path.splitext(source)[1].lower() in (".json", ".jsonl", ".parquet") \
        or source.startswith(("/", "."))
    return looks_local and not os.path.exists(source)


def _check_source(source: str, name: str) -> str:
    if is_missing_local(source):
        raise FileNotFoundError(f"data.{name}: {source} does not exist (name a file, a hub "
                                f"data set, or set AUXDPO_DATA_DIR; see docs/protocol.md)")
    return source


def _evaluation_rows(dataset: str, spec: DataSpec, synthetic_dir: str | None) -> list[dict]:
    if dataset == "mmlu-pro":
        from auxdpo.data.mmlu_pro import load_mmlu_pro

        return list(load_mmlu_pro(_check_source(spec.mmlu_pro, "mmlu_pro")))
    from auxdpo.data.rewardbench2 import load_rewardbench2

    source = spec.rewardbench2
    if source == "synthetic":
        from auxdpo.harness.protocol.smoke import write_synthetic_rewardbench2

        if synthetic_dir is None:
            raise ValueError("data.rewardbench2 'synthetic' needs an output folder")
        source = write_synthetic_rewardbench2(os.path.join(synthetic_dir,
                                                           "rewardbench2_SYNTHETIC.json"))
    return list(load_rewardbench2(_check_source(source, "rewardbench2")))


def load_protocol_data(spec: DataSpec, datasets: list[str], settings: list[str],
                       synthetic_dir: str | None = None) -> ProtocolData:
    """Load, filter, split and pair every data set the grid needs."""
    import datasets as hf

    from auxdpo.data import id_sets

    data = ProtocolData()
    for dataset in datasets:
        rows = _limit(_evaluation_rows(dataset, spec, synthetic_dir), dataset, spec.max_chars,
                      spec.max_rows, spec.split_seed)
        sets = id_sets(dataset, hf.Dataset.from_list(rows), seed=spec.split_seed,
                       test_fraction=spec.test_fraction)
        data.id_train[dataset] = [{k: pair[k] for k in PAIR_KEYS} for pair in sets.train_pairs]
        data.held_out[dataset] = HeldOut(dataset, list(sets.test_pairs), list(sets.test_rows))
        data.sources[dataset] = spec.rewardbench2 if dataset == "rewardbench2" else spec.mmlu_pro
    if "ood" in settings:
        from auxdpo.data.formats import load_training_pairs

        source = _check_source(spec.ultrafeedback, "ultrafeedback")
        pairs = list(load_training_pairs(source, spec.dataset_format,
                                         options=spec.expansion_options()))
        pairs = _limit(pairs, "ultrafeedback", spec.max_ood_prompt_chars, spec.max_ood_pairs,
                       spec.split_seed, by_prompt=spec.dataset_format != "ultrafeedback")
        # soft labels (multi-comparison formats) travel with the pairs to the trainer
        keys = PAIR_KEYS + (("pref_prob",) if pairs and "pref_prob" in pairs[0] else ())
        data.ood_train = [{k: pair[k] for k in keys} for pair in pairs]
        data.sources["ultrafeedback"] = spec.ultrafeedback
    return data


def train_pairs_for(data: ProtocolData, dataset: str, setting: str) -> list[dict[str, Any]]:
    """The training pairs of a run: the data set's 80% (ID) or UltraFeedback (OOD)."""
    if setting == "id":
        return data.id_train[dataset]
    if setting == "ood":
        return data.ood_train
    raise ValueError(f"setting must be 'id' or 'ood', got {setting!r}")
