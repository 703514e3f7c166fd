"""AuxDPO's offsets δ inside the trainer (:class:`OffsetsTraining`): what the trainer asks of
them at each point of a step, in one object.

Also here: the offsets' keys of the prepared training set and the start-up coverage report
(:func:`offset_keys_for`, :func:`report_coverage`), the unshuffled pass over the data that
δ's set-up needs (:class:`DatasetBatches`) and the callback that steps δ.

The trainer holds one ``OffsetsTraining`` (``trainer.aux``; None for the other methods) and
calls it at fixed points: :meth:`~OffsetsTraining.deltas` in the loss,
:meth:`~OffsetsTraining.extra_loss` after it, :meth:`~OffsetsTraining.after_backward` after each
micro-batch, :meth:`~OffsetsTraining.after_optimizer_step` after each model step, and
:meth:`~OffsetsTraining.save` / :meth:`~OffsetsTraining.load` with the checkpoints. This class
is AuxDPO's own objective: δ in reward units, its own optimizer and learning rate, stepped
after the model's step and never clipped with it (:class:`auxdpo.offsets.AuxOffsets`). The
authors' notebook objective is a subclass beside it (:mod:`auxdpo.train.notebook`).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from auxdpo.files import honour_umask
from auxdpo.offsets import AuxOffsets
from auxdpo.offsets.keys import OffsetKeys, coverage, inactive_warning, keys_from_ids
from auxdpo.offsets.products import DIFFERENCE_METHODS
from auxdpo.train.capacity import trainable_parameter_names
from auxdpo.train.checkpoint import OFFSETS_STEM, load_state, save_state
from auxdpo.train.data import AUX_INDEX
from auxdpo.train.reference_pass import PathOptions, reference_products

__all__ = ["COVERAGE_FILE", "DELTAS_FILE", "DatasetBatches", "OffsetsStepCallback",
           "OffsetsTraining", "build_offsets", "offset_keys_for", "planned_epochs",
           "report_coverage"]

logger = logging.getLogger(__name__)

DELTAS_FILE = "aux_deltas.safetensors"
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


class OffsetsStepCallback(TrainerCallback):
    """After each model optimizer step (the model's gradients already clipped, without δ),
    the objective's own step: δ's penalty gradient and optimizer step, or nothing."""

    def __init__(self, objective: "OffsetsTraining") -> None:
        self.objective = objective

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.objective.after_optimizer_step()
        return control


def _jvp_method(options: PathOptions, dtype: torch.dtype, exact: bool) -> str:
    """``options.jvp``, or the default: central-difference, forward (exact) for 16-bit
    parameters or where an exact product is needed (``exact``)."""
    jvp = options.jvp or ("forward" if exact else "central-difference")
    if jvp in DIFFERENCE_METHODS and torch.finfo(dtype).bits < 32:
        logger.info("AuxDPO: %s parameters, so A_Bᵀu by forward-mode AD instead of %s",
                    dtype, jvp)
        jvp = "forward"
    return jvp


def build_offsets(trainer, options: PathOptions, *, exact: bool = False,
                  null_weights: str | None = None,
                  delta_cap: float | None = None) -> tuple[AuxOffsets, dict[str, float]]:
    """The offsets of ``trainer``'s prepared training set (products at θ₀ over the trainable
    tensors, keys from the exact token ids), and the coverage statistics of response keys.
    ``null_weights``/``delta_cap`` override the config's (the notebook preset's own)."""
    args = trainer.args
    policy = trainer.accelerator.unwrap_model(trainer.model)
    names = trainable_parameter_names(policy)
    dtype = dict(policy.named_parameters())[names[0]].dtype if names else torch.float32
    jvp = _jvp_method(options, dtype, exact)
    # Exact methods run the VJP on math attention too, so that all products see one A_B;
    # difference methods use the default kernels throughout.
    products = reference_products(trainer, truncate=options.truncate_products, jvp_method=jvp,
                                  math_attention_vjp=jvp in ("forward", "double-vjp"))
    keys, coverage = offset_keys_for(trainer.train_dataset, args.aux_offsets)
    offsets = AuxOffsets(
        len(trainer.train_dataset), products, mode=args.aux_constraint, keys=keys,
        null_weights=null_weights or args.aux_null_weights, delta_scale=args.aux_delta_scale,
        delta_half_count=args.aux_delta_half_count, lambda_null=args.lambda_null,
        lambda_amp=abs(args.lambda_amp), amp_sign=-1 if args.lambda_amp < 0 else 1,
        delta_lr=args.delta_lr, delta_cap=delta_cap if delta_cap is not None else args.delta_cap,
        recompute_every=options.recompute_u_every, dtype=products.dtype,
        optimizer=options.delta_optimizer, keep_reference_graph=options.keep_reference_graph)
    return offsets, coverage


class OffsetsTraining:
    """AuxDPO's objective on δ for ``trainer``: δ in reward units, stepped by its own
    optimizer after each model optimizer step."""

    fuses_reference = True    # the loss may take log π_ref from the offsets' products pass

    def __init__(self, trainer, options: PathOptions) -> None:
        self.trainer = trainer
        self.offsets, self.response_coverage = self._build(trainer, options)
        self.rows_since_step = 0
        trainer.add_callback(OffsetsStepCallback(self))

    def _build(self, trainer, options: PathOptions) -> tuple[AuxOffsets, dict[str, float]]:
        return build_offsets(trainer, options)

    def _log(self, name: str, value: float) -> None:
        self.trainer.log_metric("train", name, value)

    # ---- the run ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Before training: one pass over the data for u (global), Γ (projection) or ω
        (prompt/reference weights); the coverage report in the run's first metrics."""
        trainer = self.trainer
        self.offsets.prepare(DatasetBatches(trainer))
        stats = report_coverage(self.offsets.keys, self.response_coverage, trainer.args,
                                trainer.accelerator.num_processes, self.offsets.null_weights)
        for name, value in stats.items():
            self._log(name, value)

    def deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ_chosen, δ_rejected) of dataset rows ``index``, in reward units, differentiable."""
        return self.offsets.deltas(index)

    def extra_loss(self, inputs: dict) -> torch.Tensor | None:
        """A term added to a training micro-batch's loss (None: none; δ's penalty is added to
        its gradient in :meth:`after_optimizer_step` instead)."""
        return None

    def after_backward(self, inputs: dict) -> None:
        """After a training micro-batch's backward: file it for the step's products."""
        self.offsets.accumulate(inputs)
        self.rows_since_step += int(inputs[AUX_INDEX].numel())

    def after_optimizer_step(self) -> None:
        """After the model's optimizer step: δ's penalty gradient and its own step."""
        if self.rows_since_step == 0:
            return
        metrics = self.offsets.step(global_batch_size=self.rows_since_step)
        self.rows_since_step = 0
        for key, value in (metrics or {}).items():
            self._log(key if key.startswith("aux/") else f"aux/{key}", float(value))

    def model_optimizer_parameters(self) -> list[torch.Tensor]:
        """Tensors trained in the model's optimizer and clipped with the model (none)."""
        return []

    # ---- checkpoints -----------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """δ's state (``aux_offsets.*``) and every row's (δ_chosen, δ_rejected) in reward units
        (:data:`DELTAS_FILE`) into ``folder``."""
        from safetensors.torch import save_file

        save_state(self.offsets.state_dict(), folder)
        index = torch.arange(self.offsets.num_examples, device=self.trainer.args.device)
        with torch.no_grad():
            chosen, rejected = self.deltas(index)
        tmp = folder / f".{DELTAS_FILE}.tmp"
        save_file({"delta_chosen": chosen.detach().cpu().contiguous(),
                   "delta_rejected": rejected.detach().cpu().contiguous()}, str(tmp))
        tmp.replace(folder / DELTAS_FILE)
        honour_umask(folder, DELTAS_FILE)

    def load(self, checkpoint: str | Path) -> None:
        """Restore δ's state from a checkpoint, u as saved (exact resume: a recomputed u
        rounds differently in float32)."""
        state = load_state(checkpoint)
        if state is None:
            raise ValueError(f"checkpoint {checkpoint} holds no AuxDPO offsets "
                             f"({OFFSETS_STEM}.json); cannot resume method auxdpo exactly")
        self.offsets.load_state_dict(state, recompute=False)
