"""The resumable protocol loop: one atomic result file per run, finished runs skipped.

Output folder layout::

    OUT/recipe.json            resolved recipe + fingerprint (a resumed run must match it)
    OUT/base/<dataset>.json    the base model's scores and metrics on the held-out 20%
    OUT/runs/<run_id>.json     one finished run: {"run", "preset", "metrics", "train", ...}
    OUT/logs/<run_id>.jsonl    that run's trainer log (one JSON line per logging step)
    OUT/tables/, OUT/figures/  written by :func:`auxdpo.harness.protocol.results.write_report`

A run is finished when its result file exists and parses; files are written to a temporary
name and renamed (``os.replace``), so an interrupted run leaves no partial file and is simply
redone on the next invocation. Training and scoring are injectable (``run_fn``, ``base_fn``)
so the loop is tested without models.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from auxdpo.files import atomic_write_text
from auxdpo.harness.protocol.recipe import Recipe, RunSpec, expand_grid, recipe_fingerprint
from auxdpo.harness.protocol.results import write_report
from auxdpo.harness.protocol.store import base_path, read_result, result_path
from auxdpo.harness.protocol.training import check_training_configs
from auxdpo.progress import is_main_process, on_terminal

__all__ = ["RunFn", "BaseFn", "ProtocolProgress", "run_protocol", "ProtocolExecutor"]

RunFn = Callable[[RunSpec], dict]
BaseFn = Callable[[str], dict]


@dataclass
class ProtocolProgress:
    """What one invocation did."""

    total: int
    skipped: int
    ran: int
    seconds: float


def _check_recipe(recipe: Recipe, out_dir: str) -> None:
    """Refuse a folder that holds another recipe's runs (reads only)."""
    path = os.path.join(out_dir, "recipe.json")
    fingerprint = recipe_fingerprint(recipe)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle).get("fingerprint")
        except (ValueError, AttributeError):
            raise ValueError(f"{path} is not a protocol recipe file; use a new --out") from None
        if stored != fingerprint:
            raise ValueError(f"{out_dir} holds runs of a different recipe (model/data/train/eval "
                             f"changed: fingerprint {stored} != {fingerprint}); use a new --out")


def _pin_recipe(recipe: Recipe, out_dir: str) -> None:
    """Write recipe.json: only once everything the runs need has been checked."""
    atomic_write_text(os.path.join(out_dir, "recipe.json"),
                      json.dumps({"fingerprint": recipe_fingerprint(recipe),
                                  "recipe": recipe.to_dict()}, indent=2, default=str) + "\n")


def _progress_bar(total: int, initial: int, enabled: bool):
    """A bar on a terminal; elsewhere (logs, pipes) the loop prints one line per run."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not (enabled and on_terminal()),
                unit="run", file=sys.stderr, desc="protocol", dynamic_ncols=True,
                smoothing=0.1)


def run_protocol(recipe: Recipe, out_dir: str, *, run_fn: RunFn | None = None,
                 base_fn: BaseFn | None = None, progress: bool = True,
                 report: bool = True) -> ProtocolProgress:
    """Run every unfinished run of the grid, then write tables and figures.

    ``run_fn(run) -> {"metrics": ..., ...}`` and ``base_fn(dataset) -> {"metrics": ...}``
    default to :class:`ProtocolExecutor` (real training and scoring). An exception from a run
    propagates after every earlier run's file is safely on disk.
    """
    # Everything is checked (recipe, stored fingerprint, data files, every run's trainer
    # config) before anything is written, so a failed start pins nothing.
    _check_recipe(recipe, out_dir)
    runs = expand_grid(recipe)
    pending = [run for run in runs if read_result(result_path(out_dir, run)) is None]
    missing_bases = [d for d in recipe.grid.datasets if read_result(base_path(out_dir, d)) is None]
    if run_fn is None:  # a bad train.extra fails before the base model is scored
        check_training_configs(recipe, pending, os.path.join(out_dir, "work"))
    if (pending or missing_bases) and (run_fn is None or base_fn is None):
        executor = ProtocolExecutor(recipe, out_dir)
        run_fn, base_fn = run_fn or executor.run, base_fn or executor.base
    os.makedirs(out_dir, exist_ok=True)
    _pin_recipe(recipe, out_dir)
    start = time.perf_counter()
    for dataset in missing_bases:
        atomic_write_text(base_path(out_dir, dataset),
                          json.dumps({"dataset": dataset, **base_fn(dataset)}) + "\n")
    progress = progress and is_main_process()
    bar = _progress_bar(len(runs), len(runs) - len(pending), progress)
    try:
        for done, run in enumerate(pending, start=len(runs) - len(pending) + 1):
            bar.set_postfix_str(run.run_id)
            began = time.perf_counter()
            outcome = run_fn(run)
            record = {"run": asdict(run), "run_id": run.run_id, "preset": run.preset,
                      "fingerprint": recipe_fingerprint(recipe),
                      "seconds": round(time.perf_counter() - began, 3), **outcome}
            atomic_write_text(result_path(out_dir, run), json.dumps(record) + "\n")
            bar.update(1)
            if progress and bar.disable:
                print(f"protocol: {done}/{len(runs)} {run.run_id} ({record['seconds']:.1f} s)",
                      file=sys.stderr, flush=True)
    finally:
        bar.close()
    if report:
        write_report(recipe, out_dir)
    return ProtocolProgress(len(runs), len(runs) - len(pending), len(pending),
                            time.perf_counter() - start)


class ProtocolExecutor:
    """The real ``run_fn``/``base_fn``: load the data once, score the base once per data set,
    train each run from a fresh base model and score it against the base's scores."""

    def __init__(self, recipe: Recipe, out_dir: str) -> None:
        from auxdpo.harness.protocol.tasks import load_protocol_data

        _quiet_libraries()
        self.recipe, self.out_dir = recipe, out_dir
        self.data = load_protocol_data(recipe.data, recipe.grid.datasets, recipe.grid.settings,
                                       synthetic_dir=os.path.join(out_dir, "data"))
        self._base_scores: dict[str, dict] = {}

    def _score(self, model, tokenizer, dataset: str) -> dict:
        from auxdpo.harness.evaluation.scoring import score_model

        spec = self.recipe.eval
        return score_model(model, tokenizer, self.data.held_out[dataset],
                           batch_size=spec.batch_size,
                           max_length=spec.max_length or self.recipe.train.max_length,
                           generate=spec.generate, max_new_tokens=spec.max_new_tokens)

    def base(self, dataset: str) -> dict:
        """The base model's scores and metrics on ``dataset``'s held-out rows."""
        from auxdpo.harness.evaluation.models import load_base_model
        from auxdpo.harness.evaluation.scoring import compute_metrics

        base = load_base_model(self.recipe.model)
        scores = self._score(base.model, base.tokenizer, dataset)
        held = self.data.held_out[dataset]
        return {"scores": scores, "source": self.data.sources[dataset],
                "metrics": compute_metrics(held, scores, None, beta=self.recipe.train.beta)}

    def base_scores(self, dataset: str) -> dict:
        if dataset not in self._base_scores:
            stored = read_result(base_path(self.out_dir, dataset))
            self._base_scores[dataset] = (stored or self.base(dataset))["scores"]
        return self._base_scores[dataset]

    def run(self, run: RunSpec) -> dict[str, Any]:
        """Train and score one run; returns ``{"metrics", "train"}``."""
        from auxdpo.harness.evaluation.scoring import compute_metrics
        from auxdpo.harness.protocol.tasks import train_pairs_for
        from auxdpo.harness.protocol.training import train_policy

        pairs = train_pairs_for(self.data, run.dataset, run.setting)
        work_dir = os.path.join(self.out_dir, "work")
        try:
            model, tokenizer, info = train_policy(self.recipe, run, pairs, work_dir)
        finally:  # nothing is saved there (save_strategy "no"); drop TRL's empty folder
            shutil.rmtree(os.path.join(work_dir, run.run_id), ignore_errors=True)
        scores = self._score(model, tokenizer, run.dataset)
        del model
        _release_memory()
        metrics = compute_metrics(self.data.held_out[run.dataset], scores,
                                  self.base_scores(run.dataset), beta=self.recipe.train.beta)
        return {"metrics": metrics, "train": info}


def _release_memory() -> None:
    """Free the finished run's model before the next one loads (GPU memory is not reused)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
