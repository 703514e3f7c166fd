"""One protocol run's training, through the trainer's Python API (``AuxDPOTrainer``).

The run starts from a fresh copy of the recipe's base model, trains on the run's pairs with
the run's method, capacity preset and seed, and returns the trained model in memory (the
runner scores it and keeps only the result file: saving 8B weights per run is not needed to
make the tables). The trainer's logged metrics go to ``OUT/logs/<run_id>.jsonl``, not to the
console. Heavy imports happen inside the function.
"""

from __future__ import annotations

import os

from auxdpo.harness.protocol.recipe import Recipe, RunSpec

__all__ = ["check_training_configs", "run_log_path", "training_config", "train_policy"]


def run_log_path(out_dir: str, run: RunSpec) -> str:
    """``OUT/logs/<run_id>.jsonl``: the trainer's logged metrics of one run."""
    return os.path.join(out_dir, "logs", f"{run.run_id}.jsonl")


def training_config(recipe: Recipe, run: RunSpec, output_dir: str, *, use_cpu: bool,
                    log_file: str | None = None):
    """The run's :class:`~auxdpo.train.config.AuxDPOConfig` (no checkpoints, no reports);
    the trainer's log lines go to ``log_file`` (JSONL) when given. ``train.extra``'s keys are
    checked against the installed TRL/transformers' fields and their types first."""
    from dataclasses import fields

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.config_check import check_config_values, unknown_keys_message

    known = {f.name for f in fields(AuxDPOConfig) if f.init}
    unknown = set(recipe.train.extra) - known
    if unknown:
        raise ValueError(unknown_keys_message(unknown, known, "train.extra: unknown key(s)"))
    try:
        check_config_values(recipe.train.extra, AuxDPOConfig)
    except ValueError as exc:
        raise ValueError(f"train.extra: {exc}") from None
    train = recipe.train
    values = dict(output_dir=output_dir, method=run.method, capacity=run.preset, seed=run.seed,
                  data_seed=run.seed, beta=train.beta, learning_rate=train.learning_rate,
                  num_train_epochs=train.num_train_epochs, max_steps=train.max_steps,
                  per_device_train_batch_size=train.batch_size,
                  gradient_accumulation_steps=train.gradient_accumulation_steps,
                  max_length=train.max_length, bf16=train.bf16, save_strategy="no",
                  report_to=[], use_cpu=use_cpu, logging_steps=10, disable_tqdm=True,
                  metrics_file=os.path.abspath(log_file) if log_file else None,
                  dataloader_num_workers=0)
    if train.gradient_checkpointing:  # passed only when on: the field name is deprecated
        values["gradient_checkpointing"] = True
    values.update(train.extra)
    return AuxDPOConfig(**values)


def check_training_configs(recipe: Recipe, runs: list[RunSpec], work_dir: str) -> None:
    """Build the trainer config of each method and capacity of ``runs`` now (the other grid
    axes do not change it), on the device :func:`train_policy` would pick, so that a bad
    ``train.extra`` fails before anything runs; ValueError names a run."""
    import torch

    use_cpu = not torch.cuda.is_available()  # as train_policy decides
    checked = set()
    for run in runs:
        if (run.method, run.preset) in checked:
            continue
        checked.add((run.method, run.preset))
        try:
            training_config(recipe, run, os.path.join(work_dir, run.run_id), use_cpu=use_cpu)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"recipe train settings, run {run.run_id}: {exc}") from None


def train_policy(recipe: Recipe, run: RunSpec, pairs: list[dict], work_dir: str):
    """Train a fresh base model on ``pairs``; return ``(trained model, tokenizer, info)``.

    ``info``: ``{"steps", "train_loss", "train_pairs", "dropped_examples"}``.
    """
    import datasets
    import torch
    from transformers import PrinterCallback

    from auxdpo.harness.evaluation.models import load_base_model
    from auxdpo.train.trainer import AuxDPOTrainer

    base = load_base_model(recipe.model, torch.device("cpu"))
    use_cpu = not torch.cuda.is_available()
    log_file = run_log_path(os.path.dirname(os.path.abspath(work_dir)), run)
    if os.path.exists(log_file):
        os.remove(log_file)  # a redone run starts its log afresh
    config = training_config(recipe, run, os.path.join(work_dir, run.run_id), use_cpu=use_cpu,
                             log_file=log_file)
    model = base.model.train()
    trainer = AuxDPOTrainer(model, args=config, train_dataset=datasets.Dataset.from_list(pairs),
                            processing_class=base.tokenizer)
    # The trainer's per-step dicts go to the run's log file, not the console (the runner
    # prints one progress line per run and the summary).
    trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    info = {"steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "train_pairs": len(pairs), "dropped_examples": dict(trainer.dropped_examples)}
    trained = trainer.model.eval()
    del trainer
    return trained, base.tokenizer, info
