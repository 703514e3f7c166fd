"""``AuxDPOTrainer``: TRL's ``DPOTrainer`` with DPO, IPO, DPOP and AuxDPO from one loss core.

What this subclass changes, and nothing else:

* the loss: :meth:`AuxDPOTrainer._compute_loss` reads top to bottom: the policy's and the
  reference's log-probs (one :class:`~auxdpo.train.reference_pass.ReferencePass` per mode,
  chosen at construction), the offsets δ, the loss of :mod:`auxdpo.losses` (``config.method``),
  the metrics under TRL's names. TRL's loss options are mapped onto those losses or refused
  (:mod:`auxdpo.train.trl_compat`);
* the trainable set: ``config.capacity`` (:mod:`auxdpo.train.capacity`); LoRA presets are
  handed to TRL as a ``peft_config`` (reference = adapters disabled); otherwise the reference
  is a frozen copy of the model made before training (none with precomputed log-probs);
* the data: rows are validated (:mod:`auxdpo.train.data`), over-long prompts are dropped with a
  logged count, and each training row gets ``aux_index``, its position in the prepared dataset,
  which addresses its offsets δ;
* AuxDPO's offsets: ``trainer.aux`` (:class:`~auxdpo.train.offsets_training.OffsetsTraining`,
  or :class:`~auxdpo.train.notebook.NotebookTraining` with ``aux_preset: notebook``) gives δ to
  the loss, files each micro-batch after its backward, steps δ after each model optimizer step
  and saves and restores it with the checkpoints; ``trainer.offsets`` is its
  :class:`auxdpo.offsets.AuxOffsets`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from trl import DPOTrainer
from trl.trainer.utils import create_model_from_path

from auxdpo.files import honour_umask
from auxdpo.lengths import clamp_to_positions, drop_far_overlong_rows
from auxdpo.logps import sequence_logps
from auxdpo.train import trl_compat
from auxdpo.train.callbacks import JsonlMetricsCallback
from auxdpo.train.capacity import CapacityPlan, apply_capacity
from auxdpo.train.checkpoint import (
    pickles_refused_by_name,
    resolve_resume,
    save_checkpoint_marked,
    without_tied_keys,
)
from auxdpo.train.config import AuxDPOConfig
from auxdpo.train.data import (
    AUX_INDEX,
    PREF_PROB,
    SOURCE_ROW,
    WEIGHT,
    AuxPreferenceCollator,
    validate_preference_rows,
)
from auxdpo.train.guards import (
    check_parameters_finite,
    check_step_finite,
    number_rows,
    pop_source_rows,
    safe_model_init_kwargs,
)
from auxdpo.train.model_card import base_model_id, record_adapter_base, write_model_card
from auxdpo.train.notebook import NotebookTraining
from auxdpo.train.offsets_training import DELTAS_FILE, DatasetBatches, OffsetsTraining
from auxdpo.train.precision import stalled_weights_message
from auxdpo.train.reference_pass import (
    PathOptions,
    choose_reference_passes,
    frozen_copy,
    model_inputs,
)
from auxdpo.train.trl_objective import (
    TokenStats,
    ld_weighted_logps,
    log_preference_metrics,
    log_trl_metrics,
)

__all__ = ["AuxDPOTrainer", "DELTAS_FILE", "PathOptions", "frozen_copy"]

logger = logging.getLogger(__name__)


class AuxDPOTrainer(DPOTrainer):
    """DPO/IPO/DPOP/AuxDPO trainer; a drop-in for ``trl.DPOTrainer``.

    ``args``: an AuxDPOConfig, a plain DPOConfig (converted, method from its ``loss_type``)
    or None (the default config, as in TRL).

    Args are TRL's. ``model`` may be a model instance or a hub name / local path (loaded with
    safetensors only, ``trust_remote_code`` from the config, off by default).
    ``path_options`` (:class:`~auxdpo.train.reference_pass.PathOptions`): how the numbers are
    computed, for tests and benchmarks that compare the paths; the default is the fastest.
    """

    _tag_names = ["trl", "dpo", "auxdpo"]
    _name = "AuxDPO"

    def __init__(self, model, ref_model=None, args: AuxDPOConfig | None = None,
                 data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, compute_metrics=None, callbacks=None,
                 optimizers=(None, None), peft_config=None,
                 path_options: PathOptions | None = None, **kwargs):
        args = trl_compat.aux_config_of(args, model)   # None → default; DPOConfig → converted
        trl_compat.check_train_dataset(train_dataset, args)
        self.base_model_id = base_model_id(model)  # named in the model card and adapter config
        if isinstance(model, str):
            model = create_model_from_path(model, **safe_model_init_kwargs(args, model))
        args.max_length = clamp_to_positions(args.max_length, model, "train")
        if is_peft_model(model) or peft_config is not None:
            if args.capacity != "full":
                raise ValueError("capacity presets apply to plain models: with a PEFT model or "
                                 "a peft_config, leave capacity at 'full'")
            self.capacity_plan = CapacityPlan(spec="full", kind="peft")  # PEFT's own flags
        else:
            self.capacity_plan = apply_capacity(model, args.capacity,
                                                lora_alpha=args.lora_alpha)
            peft_config = self.capacity_plan.peft_config
            # TRL keeps no reference when it precomputes the reference log-probs. AuxDPO's
            # products still need θ₀: they snapshot the trainable tensors alone (the frozen
            # rest of the policy is θ₀'s), not a copy of the whole model.
            if peft_config is None and ref_model is None and not args.precompute_ref_log_probs:
                ref_model = frozen_copy(model)
        self.dropped_examples: dict[str, int] = {}
        self.source_rows: dict[str, list[int] | None] = {}  # per split: rows' file numbers
        super().__init__(model=model, ref_model=ref_model, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, compute_metrics=compute_metrics,
                         callbacks=callbacks, optimizers=optimizers, peft_config=peft_config,
                         **kwargs)
        record_adapter_base(self.model, self.base_model_id)
        self._warn_if_weights_cannot_move()
        self.data_collator = AuxPreferenceCollator(self.data_collator, args.pref_prob_column,
                                                   args.weight_column)
        self.loss_fn, self.trl_objective = trl_compat.build_objective(args)
        options = path_options or PathOptions()
        self.aux: OffsetsTraining | None = None
        if args.method == "auxdpo":
            objective = NotebookTraining if args.aux_preset == "notebook" else OffsetsTraining
            self.aux = objective(self, options)
        self.offsets = self.aux.offsets if self.aux is not None else None
        self.reference_passes = choose_reference_passes(self, options)
        if args.metrics_file:
            self.add_callback(JsonlMetricsCallback(Path(args.output_dir) / args.metrics_file))

    def _warn_if_weights_cannot_move(self):
        """16-bit trainable weights that a step of the learning rate rounds away (see
        auxdpo.train.precision); DeepSpeed keeps float32 master weights, so not there."""
        if getattr(self, "is_deepspeed_enabled", False):
            return
        message = stalled_weights_message(self.model.parameters(), self.args.learning_rate)
        if message:
            logger.warning(message)

    # ---- data ------------------------------------------------------------------------------

    @staticmethod
    def _numbered(dataset, dataset_name: str):
        """The training set with ``aux_index``, each row's position (addresses its δ)."""
        if dataset_name != "train" or not isinstance(dataset, Dataset):
            return dataset
        if AUX_INDEX in dataset.column_names:
            dataset = dataset.remove_columns(AUX_INDEX)
        return dataset.add_column(AUX_INDEX, list(range(len(dataset))))

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not isinstance(dataset, Dataset) or "prompt_ids" in dataset.column_names:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return self._numbered(dataset, dataset_name)
        rows = validate_preference_rows(dataset, pref_prob_column=args.pref_prob_column,
                                        weight_column=args.weight_column)
        dataset = drop_far_overlong_rows(number_rows(dataset), processing_class,
                                         args.max_length, dataset_name, SOURCE_ROW)
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        dataset, self.source_rows[dataset_name] = pop_source_rows(dataset)
        dropped = rows - len(dataset)
        self.dropped_examples[dataset_name] = dropped
        if dropped:
            logger.warning("%s dataset: dropped %d of %d examples whose prompt alone fills "
                           "max_length=%s", dataset_name, dropped, rows, args.max_length)
        if len(dataset) == 0:
            raise ValueError(f"{dataset_name} dataset: every example's prompt fills "
                             f"max_length={args.max_length}; nothing left to train on")
        return self._numbered(dataset, dataset_name)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = [AUX_INDEX, self.args.pref_prob_column, self.args.weight_column]
        self._signature_columns += [c for c in extra if c and c not in self._signature_columns]

    # ---- training --------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None,
              **kwargs):
        resume_from_checkpoint = resolve_resume(self.args.output_dir, resume_from_checkpoint)
        if self.aux is not None:
            self.aux.prepare()
        with pickles_refused_by_name(resume_from_checkpoint):
            return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                 ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_step_finite(self, model, loss, inputs)
        if self.aux is not None:
            self.aux.after_backward(inputs)
        return loss

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        extra = self.aux.model_optimizer_parameters() if self.aux is not None else []
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for param in extra:
            if id(param) not in known:
                # The model's decay group's settings: its learning rate (and hence the
                # schedule, built after this), weight decay, betas and eps.
                optimizer.add_param_group({"params": [param],
                                           "weight_decay": self.args.weight_decay})
        return optimizer

    def _clip_grad_norm(self, model):
        extra = self.aux.model_optimizer_parameters() if self.aux is not None else []
        if not extra:
            return super()._clip_grad_norm(model)
        params = [*model.parameters(), *extra]
        return self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm)

    def dataset_batches(self) -> DatasetBatches:
        """The training set in unshuffled collated batches (for δ's whole-dataset passes)."""
        return DatasetBatches(self)

    def log_metric(self, mode: str, name: str, value: float) -> None:
        """Add one value to the metrics logged (averaged) at the next logging step."""
        self._metrics[mode][name].append(value)

    # ---- saving ----------------------------------------------------------------------------

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        write_model_card(self, model_name=model_name, dataset_name=dataset_name, tags=tags)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        check_parameters_finite(self.model, output_dir or self.args.output_dir)
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            write_model_card(self, output_dir)
            honour_umask(output_dir or self.args.output_dir)
            if self.aux is not None:
                self.aux.save(Path(output_dir or self.args.output_dir))

    def _save_checkpoint(self, model, trial):
        save_checkpoint_marked(self, super()._save_checkpoint, model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.aux is not None:
            self.aux.load(resume_from_checkpoint)

    def _issue_warnings_after_load(self, load_result):  # tied weights are not missing
        super()._issue_warnings_after_load(without_tied_keys(self.model, load_result))

    # ---- loss ------------------------------------------------------------------------------

    def sequence_logps(self, model, model_kwargs, inputs):
        """``(2B,)`` response log-probs (sum, or mean for IPO) and the model outputs.

        float32/bf16 models use TRL's fused LM head (no ``(N, T, V)`` logits; computed in
        float32). float64 models take the exact path through full logits, so that float64
        identities hold to float64 precision.
        """
        completion_mask = inputs["completion_mask"]
        if next(model.parameters()).dtype == torch.float64:
            outputs = model(**model_kwargs)
            if self.ld_alpha is None:
                logps = sequence_logps(outputs.logits, inputs["input_ids"], completion_mask,
                                       average=self.args.logp_average)
                return logps, outputs
            token_logps = TokenStats(outputs, inputs).log_probs
        else:
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
            seq_len = completion_mask.size(1) - 1
            token_logps = outputs.log_probs[:, -seq_len:]
        if self.ld_alpha is None:
            logps = token_logps.sum(dim=1)  # prompt/pad positions score 0
        else:
            logps = ld_weighted_logps(token_logps, completion_mask[:, 1:], self.ld_alpha)
        if self.args.logp_average:
            logps = logps / completion_mask[:, 1:].sum(dim=1).clamp(min=1).to(logps.dtype)
        return logps, outputs

    def _loss_kwargs(self, inputs, mode: str, dtype: torch.dtype) -> dict:
        kwargs = {"beta": self.beta}
        for key in (PREF_PROB, WEIGHT):
            if key in inputs:
                kwargs[key] = inputs[key].to(dtype)
        if self.args.method == "dpop":
            kwargs["dpop_lambda"] = self.args.dpop_lambda
        if self.aux is not None and mode == "train":
            chosen, rejected = self.aux.deltas(inputs[AUX_INDEX])    # reward units
            kwargs["delta_chosen"], kwargs["delta_rejected"] = chosen.to(dtype), rejected.to(dtype)
        return kwargs

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = model_inputs(inputs, router_logits=self.aux_loss_enabled)
        ref_logps, (policy_logps, outputs) = self.reference_passes[mode].run(
            inputs, lambda: self.sequence_logps(model, model_kwargs, inputs))
        ref_logps = ref_logps.to(policy_logps.dtype)
        policy_chosen, policy_rejected = policy_logps.chunk(2)
        ref_chosen, ref_rejected = ref_logps.chunk(2)
        kwargs = self._loss_kwargs(inputs, mode, policy_logps.dtype)
        stats = TokenStats(outputs, inputs)
        if self.trl_objective:
            kwargs.update(inputs=inputs, stats=stats)
        result = self.loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, **kwargs)
        loss = result.losses.mean()
        log_preference_metrics(self, mode, loss, result, policy_chosen, policy_rejected)
        log_trl_metrics(self, mode, stats, inputs)
        extra = self.aux.extra_loss(inputs) if self.aux is not None and mode == "train" else None
        if extra is not None:
            loss = loss + extra          # the notebook preset's penalty, per micro-batch
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self.log_metric(mode, "aux_loss", self.accelerator.gather_for_metrics(
                outputs.aux_loss.detach()).mean().item())
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss
