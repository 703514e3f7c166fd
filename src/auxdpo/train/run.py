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
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from auxdpo.train.checkpoint import atomic_write_text
from auxdpo.train.config_check import check_config_values, unknown_keys_message
from auxdpo.train.data import SOURCE_ROW, RowTable, validate_preference_rows
from auxdpo.train.run_arguments import RunArguments, data_source, parse_overrides
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model, is_tiny_name

__all__ = ["RESOLVED_CONFIG", "RunArguments", "config_key_names", "data_source",
           "load_dataset_rows", "load_model_and_tokenizer", "mean_over_processes", "parse_overrides", "resolve_config",
           "run_training"]

logger = logging.getLogger(__name__)
RESOLVED_CONFIG = "auxdpo_config.yaml"


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


def load_model_and_tokenizer(run_args: RunArguments, config):
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
    """Train, save everything into ``config.output_dir``; return paths and final metrics.

    A used output folder is refused unless the run resumes or ``overwrite_output_dir`` is set
    (:mod:`auxdpo.train.run_folder`), and the data file must exist, before the folder is
    created; a run that fails before its first step removes what it created."""
    from auxdpo.locks import output_folder
    from auxdpo.train.run_folder import check_run_folder, failed_start_cleanup

    check_run_folder(config.output_dir, resume=config.resume_from_checkpoint,
                     overwrite=run_args.overwrite_output_dir)
    data_source(run_args)  # a missing data file: the error before any folder is made
    with failed_start_cleanup(config.output_dir) as progress:
        with output_folder(config.output_dir, "auxdpo train"):
            return _train_in(run_args, config, progress)


def _train_in(run_args: RunArguments, config, progress) -> dict[str, Any]:
    from auxdpo.train.checkpoint import disk_full_named
    from auxdpo.train.run_folder import clear_previous_run
    from auxdpo.train.trainer import AuxDPOTrainer

    model, tokenizer = load_model_and_tokenizer(run_args, config)
    columns = {"pref_prob_column": config.pref_prob_column,
               "weight_column": config.weight_column}
    train_data = load_dataset_rows(run_args, **columns)
    eval_data = (load_dataset_rows(run_args, run_args.eval_split, **columns)
                 if run_args.eval_split else None)
    out = Path(config.output_dir)
    trainer = AuxDPOTrainer(model, args=config, train_dataset=train_data,
                            eval_dataset=eval_data, processing_class=tokenizer)
    progress.trainer = trainer
    if run_args.overwrite_output_dir:  # the checks passed: now the earlier run goes
        clear_previous_run(out, config.metrics_file)
    with disk_full_named(out / RESOLVED_CONFIG):
        resolved = _write_resolved_config(run_args, config)
    if is_tiny_name(run_args.model_name_or_path):
        trainer.base_model_id = run_args.model_name_or_path  # for the model card only
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    with disk_full_named(out, out):  # the message names the checkpoint to resume from
        trainer.save_model(str(out))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    final = {k: v for k, v in (logs[-1] if logs else {}).items() if isinstance(v, (int, float))}
    return {"output_dir": str(out), "config": str(resolved),
            "metrics_file": str(out / config.metrics_file) if config.metrics_file else None,
            "steps": trainer.state.global_step, "train_loss": result.training_loss,
            "final": mean_over_processes(trainer, final),
            "main_process": trainer.is_world_process_zero(),
            "dropped_examples": dict(trainer.dropped_examples)}


def mean_over_processes(trainer, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric's mean over the run's processes (one process: ``metrics`` as they are).
    Every process must call it (a collective)."""
    if trainer.accelerator.num_processes == 1:
        return dict(metrics)
    from accelerate.utils import gather_object

    gathered = gather_object([metrics])
    keys = sorted({key for entry in gathered for key in entry})
    return {key: sum(values) / len(values) for key in keys
            if (values := [entry[key] for entry in gathered if key in entry])}
