"""What ``auxdpo train`` loads (:class:`RunArguments`), read without heavy imports.

:class:`RunArguments` holds the recipe keys that say what to load (model, tokenizer, data) and
where the run goes (``overwrite_output_dir``); :func:`parse_overrides` reads the command line's
``--key value`` pairs; :func:`data_source` says where the rows come from without reading them.
Nothing here imports torch, transformers or TRL, so a recipe's mistakes in these keys are
reported in a fraction of a second (docs/trainer.md, "Errors in a second").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from auxdpo.yamlio import load_yaml

__all__ = ["DATA_FILE_SUFFIXES", "RunArguments", "data_source", "looks_like_data_file",
           "parse_overrides"]

# What dataset_name may name as a file: .jsonl/.json rows; .parquet too with dataset_format.
DATA_FILE_SUFFIXES = (".jsonl", ".json")
_FORMAT_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


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
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Train into an output_dir that holds an earlier run: its files (model, "
                "checkpoints, offsets, metrics, config, model card) are removed first; other "
                "files stay. Off: such a folder is refused unless resume_from_checkpoint is "
                "set. (transformers 5 dropped TrainingArguments' field of this name.)"})

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


def looks_like_data_file(name: str, dataset_format: str | None) -> bool:
    """Whether ``dataset_name`` names a file (by its suffix) rather than a folder or hub set."""
    suffixes = DATA_FILE_SUFFIXES if dataset_format is None else _FORMAT_FILE_SUFFIXES
    return os.path.splitext(name)[1].lower() in suffixes


def data_source(run_args: RunArguments) -> str:
    """Where the rows come from, without reading them: ``"file NAME"``, ``"folder NAME"`` or
    ``"hub NAME"``. A missing ``dataset_name``, or a file name (.jsonl/.json; .parquet with
    ``dataset_format``) that does not exist, raises the error loading would raise."""
    name = run_args.dataset_name
    if not name:
        raise ValueError("dataset_name is required (a .jsonl/.json file, folder or hub name)")
    if os.path.isfile(name):
        return f"file {name}"
    if looks_like_data_file(name, run_args.dataset_format):
        raise FileNotFoundError(f"dataset file {name} does not exist")
    return f"folder {name}" if os.path.isdir(name) else f"hub {name}"
