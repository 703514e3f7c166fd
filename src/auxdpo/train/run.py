"""One training run from a flat, TRL-style config: load model and data, train, write outputs.

A config is a flat mapping (YAML file + ``--key value`` overrides) whose keys are fields of
:class:`RunArguments` (what to load) or of :class:`~auxdpo.train.config.AuxDPOConfig` (how to
train). The run directory (``output_dir``) receives the model (or LoRA adapter) as
safetensors, the tokenizer, AuxDPO's offsets (``aux_offsets.*``, ``aux_deltas.safetensors``),
``metrics.jsonl``, the resolved config ``auxdpo_config.yaml`` and TRL's checkpoints.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from auxdpo.train.checkpoint import atomic_write_text
from auxdpo.train.data import RowTable, validate_preference_rows
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model, is_tiny_name
from auxdpo.yamlio import load_yaml

__all__ = ["RESOLVED_CONFIG", "RunArguments", "load_dataset_rows", "parse_overrides",
           "resolve_config", "run_training"]

logger = logging.getLogger(__name__)
RESOLVED_CONFIG = "auxdpo_config.yaml"


@dataclass
class RunArguments:
    """What to load: the model, its tokenizer and the preference data."""

    model_name_or_path: str = field(default="tiny-gpt2", metadata={
        "help": "Hub name, local folder, or tiny-gpt2 / tiny-llama / tiny-qwen2 / tiny-qwen3 "
                "(a random tiny model with an offline character tokenizer)."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "Tokenizer to load (default: the model's)."})
    dataset_name: str = field(default="", metadata={
        "help": "Local .jsonl/.json file or folder, or a hub data set name."})
    dataset_config: str | None = field(default=None, metadata={
        "help": "Hub data set configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={
        "help": "Optional split to evaluate on (hub or folder data sets)."})
    max_train_rows: int | None = field(default=None, metadata={
        "help": "Use only the first this many rows (None: all)."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Layers of a tiny-* model."})
    tiny_hidden_size: int = field(default=32, metadata={"help": "Width of a tiny-* model."})
    tiny_seed: int = field(default=0, metadata={"help": "Seed of a tiny-* model's weights."})


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--beta", "0.2", "--bf16=false", "--flag"]`` → ``{"beta": 0.2, "bf16": False,
    "flag": True}``; values are read as YAML scalars (numbers, booleans, null, lists), with
    YAML 1.2 booleans: ``--save_strategy no`` stays the string ``"no"``."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ValueError(f"override {token!r}: expected --key value or --key=value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = "true"
        out[key.replace("-", "_")] = load_yaml(value) if value != "" else ""
        i += 1
    return out


def resolve_config(values: dict[str, Any]):
    """Split a flat mapping into ``(RunArguments, AuxDPOConfig)``; unknown keys are an error."""
    from auxdpo.train.config import AuxDPOConfig

    run_names = {f.name for f in fields(RunArguments)}
    config_names = {f.name for f in fields(AuxDPOConfig) if f.init}
    unknown = sorted(set(values) - run_names - config_names)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
    run_args = RunArguments(**{k: v for k, v in values.items() if k in run_names})
    config_values = {k: v for k, v in values.items() if k in config_names}
    config_values.setdefault("output_dir", "runs/train")
    return run_args, AuxDPOConfig(**config_values)


def _read_json_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {number + 1} is not JSON ({exc})") from None
        return rows
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of rows")
    return rows


def load_dataset_rows(run_args: RunArguments, split: str | None = None, *,
                      pref_prob_column: str | None = None, weight_column: str | None = None):
    """The preference data as a ``datasets.Dataset`` (local JSON rows are validated first)."""
    import datasets

    name = run_args.dataset_name
    if not name:
        raise ValueError("dataset_name is required (a .jsonl/.json file, folder or hub name)")
    path = Path(name)
    if path.is_file():
        rows = _read_json_rows(path)
        if run_args.max_train_rows is not None:
            rows = rows[:run_args.max_train_rows]
        validate_preference_rows(RowTable(rows), pref_prob_column=pref_prob_column,
                                 weight_column=weight_column)
        return datasets.Dataset.from_list(rows)
    if name.endswith((".jsonl", ".json")):
        raise FileNotFoundError(f"dataset file {name} does not exist")
    data = datasets.load_dataset(name, run_args.dataset_config,
                                 split=split or run_args.dataset_split)
    if run_args.max_train_rows is not None:
        data = data.select(range(min(run_args.max_train_rows, len(data))))
    return data


def _load_model_and_tokenizer(run_args: RunArguments, config):
    if is_tiny_name(run_args.model_name_or_path):
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(run_args.model_name_or_path[len("tiny-"):],
                                 vocab_size=len(tokenizer), num_layers=run_args.tiny_num_layers,
                                 hidden_size=run_args.tiny_hidden_size, seed=run_args.tiny_seed)
        return model, tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        run_args.tokenizer_name_or_path or run_args.model_name_or_path,
        trust_remote_code=config.trust_remote_code)
    return run_args.model_name_or_path, tokenizer  # the trainer loads it (safetensors only)


def _write_resolved_config(run_args: RunArguments, config) -> Path:
    config_dict = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
    resolved = {"run": asdict(run_args), "training": config_dict}
    path = Path(config.output_dir) / RESOLVED_CONFIG
    atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(resolved, default=str)),
                                           sort_keys=True))
    return path


def run_training(run_args: RunArguments, config) -> dict[str, Any]:
    """Train, save everything into ``config.output_dir``; return paths and final metrics."""
    from auxdpo.train.trainer import AuxDPOTrainer

    model, tokenizer = _load_model_and_tokenizer(run_args, config)
    columns = {"pref_prob_column": config.pref_prob_column,
               "weight_column": config.weight_column}
    train_data = load_dataset_rows(run_args, **columns)
    eval_data = (load_dataset_rows(run_args, run_args.eval_split, **columns)
                 if run_args.eval_split else None)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = _write_resolved_config(run_args, config)
    trainer = AuxDPOTrainer(model, args=config, train_dataset=train_data,
                            eval_dataset=eval_data, processing_class=tokenizer)
    if is_tiny_name(run_args.model_name_or_path):
        trainer.base_model_id = run_args.model_name_or_path  # for the model card only
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(str(out))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    final = logs[-1] if logs else {}
    return {"output_dir": str(out), "config": str(resolved),
            "metrics_file": str(out / config.metrics_file) if config.metrics_file else None,
            "steps": trainer.state.global_step, "train_loss": result.training_loss,
            "final": {k: v for k, v in final.items() if isinstance(v, (int, float))},
            "dropped_examples": dict(trainer.dropped_examples)}
