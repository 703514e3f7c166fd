"""The trainer's side of AuxDPO's offset keys: keys from the prepared (tokenised) training
set, and the start-up report of how much the offsets can act (docs/trainer.md).

Kept out of :mod:`auxdpo.train.trainer`, which calls :func:`offset_keys_for` once when it
builds the offsets and :func:`report_coverage` once when training starts.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from torch.utils.data import DataLoader

from auxdpo.offsets.keys import OffsetKeys, coverage, inactive_warning, keys_from_ids

__all__ = ["COVERAGE_FILE", "DatasetBatches", "offset_keys_for", "planned_epochs", "report_coverage"]

logger = logging.getLogger(__name__)

COVERAGE_FILE = "aux_coverage.json"


def offset_keys_for(dataset, keying: str) -> tuple[OffsetKeys, dict[str, float]]:
    """Keys of a prepared training set (TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids``:
    the exact ids the model scores), and the coverage statistics of its response keys."""
    ids = (dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])
    responses = keys_from_ids(*ids, keying="response")
    keys = responses if keying == "response" else keys_from_ids(*ids, keying="row")
    return keys, coverage(responses)


class DatasetBatches:
    """Re-iterable, unshuffled pass over a dataset in collated, device-placed batches."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def __iter__(self):
        trainer = self.trainer
        loader = DataLoader(trainer.train_dataset, shuffle=False,
                            batch_size=trainer.args.per_device_train_batch_size,
                            collate_fn=trainer.data_collator)
        for batch in loader:
            yield trainer._prepare_inputs(batch)


def planned_epochs(args, num_examples: int, world_size: int = 1) -> float:
    """Passes over the training set the run will make (``max_steps`` wins, as in HF)."""
    if args.max_steps and args.max_steps > 0:
        per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                    * max(world_size, 1))
        return args.max_steps * per_step / num_examples
    return float(args.num_train_epochs)


def report_coverage(keys: OffsetKeys, response_stats: dict[str, float], args,
                    world_size: int = 1, null_weights: str | None = None) -> dict[str, float]:
    """Log the offsets' coverage, write it to ``output_dir/aux_coverage.json`` (main process)
    and warn when no offset can act; returns the ``aux/*`` statistics. ``null_weights``: the
    offsets' weighting (default ``args.aux_null_weights``)."""
    null_weights = null_weights or args.aux_null_weights
    stats = coverage(keys)
    epochs = planned_epochs(args, keys.num_examples, world_size)
    logger.info("AuxDPO offsets (aux_offsets=%s, aux_null_weights=%s): %d unique responses, "
                "%.3f pairs per response, %.1f%% of responses in two or more pairs; "
                "%.2f epoch(s) planned", keys.keying, null_weights,
                int(stats["aux/unique_responses"]), stats["aux/pairs_per_response"],
                100 * stats["aux/shared_share"], epochs)
    message = inactive_warning(stats, keys.keying, epochs, response_stats)
    if message:
        warnings.warn(message, UserWarning, stacklevel=3)
    if args.should_save:
        folder = Path(args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"aux_offsets": keys.keying, "aux_null_weights": null_weights,
                  "pairs": keys.num_examples, "planned_epochs": epochs, **stats,
                  "response_keys": response_stats, "warning": message}
        from auxdpo.files import atomic_write_text

        atomic_write_text(folder / COVERAGE_FILE, json.dumps(record, indent=1) + "\n")
    return stats
