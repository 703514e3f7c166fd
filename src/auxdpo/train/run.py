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
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from auxdpo.train.checkpoint import atomic_write_text
from auxdpo.train.config_check import check_config_values, unknown_keys_message
from auxdpo.train.data import SOURCE_ROW, RowTable, validate_preference_rows
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model, is_tiny_name
from auxdpo.yamlio import load_yaml

__all__ = ["RESOLVED_CONFIG", "RunArguments", "config_key_names", "data_source",
           "load_dataset_rows", "parse_overrides", "resolve_config", "run_training"]

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
        "help": "Use only the first this many rows (None: all); with dataset_format, the "
                "first this many pairs after expansion."})
    dataset_format: str | None = field(default=None, metadata={
        "help": "None: rows are TRL preference rows as they are. Else read dataset_name with "
                "auxdpo.data as ultrafeedback (pairs), rlhflow-ultrafeedback, "
                "openbmb-ultrafeedback or scored-responses (every pair of a prompt's scored "
                "responses; see docs/data.md)."})
    dataset_ties: str = field(default="drop", metadata={
        "help": "dataset_format with scores: drop pairs of equal scores, or 'half' to keep "
                "them with soft label 1/2."})
    dataset_soft_label_temperature: float | None = field(default=None, metadata={
        "help": "dataset_format with scores: soft labels p = sigmoid((score_chosen - "
                "score_rejected)/T) in pref_prob_column (None: hard labels)."})
    dataset_score_field: str = field(default="fine-grained_score", metadata={
        "help": "openbmb-ultrafeedback: fine-grained_score (mean aspect rating) or "
                "overall_score."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Layers of a tiny-* model."})
    tiny_hidden_size: int = field(default=32, metadata={"help": "Width of a tiny-* model."})
    tiny_seed: int = field(default=0, metadata={"help": "Seed of a tiny-* model's weights."})

    def __post_init__(self):
        if self.dataset_format is not None:
            from auxdpo.data.formats import TRAIN_FORMATS

            if self.dataset_format not in TRAIN_FORMATS:
                raise ValueError(f"dataset_format must be one of {', '.join(TRAIN_FORMATS)} "
                                 f"or null; got {self.dataset_format!r}")
            self.expansion_options()  # raises ValueError on a bad tie rule or temperature

    def expansion_options(self):
        """The tie rule, temperature and score field as :class:`ExpansionOptions`."""
        from auxdpo.data.comparisons import ExpansionOptions

        return ExpansionOptions(ties=self.dataset_ties,
                                temperature=self.dataset_soft_label_temperature,
                                score_field=self.dataset_score_field)


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


def config_key_names() -> set[str]:
    """Every key a flat config may hold: the fields of RunArguments and of the installed
    TRL/transformers' AuxDPOConfig."""
    from auxdpo.train.config import AuxDPOConfig

    return {f.name for f in fields(RunArguments)} | \
        {f.name for f in fields(AuxDPOConfig) if f.init}


def resolve_config(values: dict[str, Any]):
    """Split a flat mapping into ``(RunArguments, AuxDPOConfig)``; unknown keys are an error."""
    from auxdpo.train.config import AuxDPOConfig

    run_names = {f.name for f in fields(RunArguments)}
    config_names = config_key_names() - run_names
    unknown = sorted(set(values) - run_names - config_names)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, run_names | config_names))
    check_config_values(values, RunArguments, AuxDPOConfig)
    run_args = RunArguments(**{k: v for k, v in values.items() if k in run_names})
    config_values = {k: v for k, v in values.items() if k in config_names}
    config_values.setdefault("output_dir", "runs/train")
    try:
        return run_args, AuxDPOConfig(**config_values)
    except TypeError as exc:  # a value of a type the annotations above did not cover
        raise ValueError(f"invalid config value: {exc}") from None


def _read_json_rows(path: Path) -> tuple[list[dict], list[int]]:
    """The rows of a .jsonl/.json file and their 1-based numbers (.jsonl: the file's line, blank
    lines counted, as an editor shows it; .json: the position in the list)."""
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        rows, numbers = [], []
        for number, raw in enumerate(data.splitlines(), start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}: line {number} is not valid UTF-8 (byte {exc.start + 1}"
                                 " of the line)") from None
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {number} is not JSON ({exc})") from None
                if not isinstance(rows[-1], dict):
                    raise ValueError(f"{path}: line {number} is not a JSON object")
                numbers.append(number)
        return rows, numbers
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not valid UTF-8") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected a JSON list of row objects")
    return rows, list(range(1, len(rows) + 1))


def data_source(run_args: RunArguments) -> str:
    """Where the rows come from, without reading them: ``"file NAME"``, ``"folder NAME"`` or
    ``"hub NAME"``. A missing ``dataset_name``, or a file name (.jsonl/.json; .parquet with
    ``dataset_format``) that does not exist, raises the error loading would raise."""
    name = run_args.dataset_name
    if not name:
        raise ValueError("dataset_name is required (a .jsonl/.json file, folder or hub name)")
    if os.path.isfile(name):
        return f"file {name}"
    if run_args.dataset_format is None:
        looks_like_file = name.endswith((".jsonl", ".json"))
    else:
        looks_like_file = os.path.splitext(name)[1].lower() in (".json", ".jsonl", ".parquet")
    if looks_like_file:
        raise FileNotFoundError(f"dataset file {name} does not exist")
    return f"folder {name}" if os.path.isdir(name) else f"hub {name}"


def load_dataset_rows(run_args: RunArguments, split: str | None = None, *,
                      pref_prob_column: str | None = None, weight_column: str | None = None):
    """The preference data as a ``datasets.Dataset`` (local JSON rows are validated first)."""
    import datasets

    data_source(run_args)  # a missing name or file fails here, before any reading
    if run_args.dataset_format is not None:
        return _load_formatted(run_args, split, pref_prob_column)
    name = run_args.dataset_name
    path = Path(name)
    if path.is_file():
        rows, numbers = _read_json_rows(path)
        if run_args.max_train_rows is not None:
            rows, numbers = rows[:run_args.max_train_rows], numbers[:run_args.max_train_rows]
        if not rows:
            raise ValueError(f"{path}: no rows")
        try:
            validate_preference_rows(RowTable(rows, numbers), pref_prob_column=pref_prob_column,
                                     weight_column=weight_column)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        # Row numbers travel with the rows so that later errors name the file's lines.
        return datasets.Dataset.from_list([{**row, SOURCE_ROW: number}
                                           for row, number in zip(rows, numbers)])
    data = datasets.load_dataset(name, run_args.dataset_config,
                                 split=split or run_args.dataset_split)
    if run_args.max_train_rows is not None:
        data = data.select(range(min(run_args.max_train_rows, len(data))))
    return data


def _load_formatted(run_args: RunArguments, split: str | None, pref_prob_column: str | None):
    """``dataset_format`` set: pairs from :func:`auxdpo.data.formats.load_training_pairs`."""
    from auxdpo.data.formats import load_training_pairs

    data = load_training_pairs(run_args.dataset_name, run_args.dataset_format,
                               split=split or run_args.dataset_split,
                               config=run_args.dataset_config,
                               options=run_args.expansion_options(),
                               pref_prob_column=pref_prob_column)
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
    from auxdpo.locks import output_folder

    with output_folder(config.output_dir, "auxdpo train"):
        return _train_in(run_args, config)


def _train_in(run_args: RunArguments, config) -> dict[str, Any]:
    from auxdpo.train.trainer import AuxDPOTrainer

    model, tokenizer = _load_model_and_tokenizer(run_args, config)
    columns = {"pref_prob_column": config.pref_prob_column,
               "weight_column": config.weight_column}
    train_data = load_dataset_rows(run_args, **columns)
    eval_data = (load_dataset_rows(run_args, run_args.eval_split, **columns)
                 if run_args.eval_split else None)
    out = Path(config.output_dir)
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
