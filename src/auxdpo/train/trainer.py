"""``AuxDPOTrainer``: TRL's ``DPOTrainer`` with DPO, IPO, DPOP and AuxDPO from one loss core.

What this subclass changes, and nothing else:

* the loss: ``_compute_loss`` forms sequence log-probs (sum, or mean for IPO) with TRL's fused
  LM head and scores them with :mod:`auxdpo.losses` (``config.method``); TRL's loss options
  are mapped onto those losses or refused (:mod:`auxdpo.train.trl_compat`), and TRL's metrics
  are logged under TRL's names (:mod:`auxdpo.train.trl_objective`);
* the trainable set: ``config.capacity`` (see :mod:`auxdpo.train.capacity`); LoRA presets are
  handed to TRL as a ``peft_config`` (reference = adapters disabled); otherwise the reference
  is a frozen copy of the model made before training (none with precomputed log-probs);
* the data: rows are validated (:mod:`auxdpo.train.data`), over-long prompts are dropped with a
  logged count, and each training row gets ``aux_index``, its position in the prepared dataset,
  which addresses its offsets δ;
* AuxDPO's offsets (:class:`auxdpo.offsets.AuxOffsets`): read in the loss, accumulated after
  each micro-batch's backward, stepped after each model optimizer step by a callback (their
  own optimizer and learning rate; never clipped with the model), saved with every model save
  (so with every checkpoint) and restored, with u recomputed, on resume
  (:mod:`auxdpo.train.offsets_hooks`). With ``aux_preset: notebook`` δ′ trains in the model's
  optimizer instead (:mod:`.notebook`);
* the reference pass: log π_ref from the offsets' fused pass, the tail-only reference, the
  precomputed columns or the frozen copy (:mod:`auxdpo.train.reference_pass`).

This module keeps the constructor, the data preparation, the training step, saving and the
loss (:meth:`AuxDPOTrainer._compute_loss`).
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
from auxdpo.train.callbacks import JsonlMetricsCallback, OffsetsStepCallback
from auxdpo.train.capacity import CapacityPlan, apply_capacity
from auxdpo.train.checkpoint import (
    pickles_refused_by_name,
    resolve_resume,
    save_checkpoint_marked,
    save_state,
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
from auxdpo.train.notebook import NotebookPresetMixin
from auxdpo.train.offset_setup import report_coverage
from auxdpo.train.offsets_hooks import DELTAS_FILE, OffsetsHooksMixin
from auxdpo.train.precision import stalled_weights_message
from auxdpo.train.reference import frozen_copy
from auxdpo.train.reference_pass import ReferencePassMixin
from auxdpo.train.trl_objective import (
    TokenStats,
    ld_weighted_logps,
    log_preference_metrics,
    log_trl_metrics,
)

__all__ = ["AuxDPOTrainer", "DELTAS_FILE", "frozen_copy"]

logger = logging.getLogger(__name__)

_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", AUX_INDEX,
                   PREF_PROB, WEIGHT}


class AuxDPOTrainer(NotebookPresetMixin, OffsetsHooksMixin, ReferencePassMixin, DPOTrainer):
    """DPO/IPO/DPOP/AuxDPO trainer; a drop-in for ``trl.DPOTrainer``.

    ``args``: an AuxDPOConfig, a plain DPOConfig (converted, method from its ``loss_type``)
    or None (the default config, as in TRL).

    Args are TRL's. ``model`` may be a model instance or a hub name / local path (loaded with
    safetensors only, ``trust_remote_code`` from the config, off by default).
    """

    _tag_names = ["trl", "dpo", "auxdpo"]
    _name = "AuxDPO"

    def __init__(self, model, ref_model=None, args: AuxDPOConfig | None = None,
                 data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, compute_metrics=None, callbacks=None,
                 optimizers=(None, None), peft_config=None, **kwargs):
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
        self.loss_fn, self._objective = trl_compat.build_objective(args)
        self.offsets = self._build_offsets() if args.method == "auxdpo" else None
        self.notebook = self._build_notebook()    # aux_preset: notebook (auxdpo.train.notebook)
        self._fuse_reference = (self.offsets is not None and self.notebook is None
                                and args.aux_fused_reference
                                and args.aux_constraint in ("global", "batch")
                                and self.offsets.products.dtype in (torch.float32,
                                                                    torch.float64))
        self._rows_since_step = 0
        self._policy_tail = None           # TailPlan of the policy (shared prefix), or False
        self._tail_reference = self._build_tail_reference()
        self.add_callback(OffsetsStepCallback(self))
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

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not isinstance(dataset, Dataset) or "prompt_ids" in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
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
        if dataset_name == "train":
            if AUX_INDEX in dataset.column_names:
                dataset = dataset.remove_columns(AUX_INDEX)
            dataset = dataset.add_column(AUX_INDEX, list(range(len(dataset))))
        return dataset

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = [AUX_INDEX, self.args.pref_prob_column, self.args.weight_column]
        self._signature_columns += [c for c in extra if c and c not in self._signature_columns]

    # ---- training --------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None,
              **kwargs):
        resume_from_checkpoint = resolve_resume(self.args.output_dir, resume_from_checkpoint)
        if self.offsets is not None:
            self.offsets.prepare(self.dataset_batches())
            stats = report_coverage(self.offsets.keys, self._response_coverage, self.args,
                                    self.accelerator.num_processes, self.offsets.null_weights)
            for name, value in stats.items():       # in the run's first logged metrics
                self._metrics["train"][name].append(value)
        with pickles_refused_by_name(resume_from_checkpoint):
            return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                 ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_step_finite(self, model, loss, inputs)
        if self.offsets is not None and self.notebook is None:  # the preset's δ′: no step
            self.offsets.accumulate(inputs)
            self._rows_since_step += int(inputs[AUX_INDEX].numel())
        return loss

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        write_model_card(self, model_name=model_name, dataset_name=dataset_name, tags=tags)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        check_parameters_finite(self.model, output_dir or self.args.output_dir)
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            write_model_card(self, output_dir)
            honour_umask(output_dir or self.args.output_dir)
        if self.offsets is not None and self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            save_state(self.offsets.state_dict(), folder)
            self._save_delta_table(folder)

    def _save_checkpoint(self, model, trial):
        save_checkpoint_marked(self, super()._save_checkpoint, model, trial)

    def _issue_warnings_after_load(self, load_result):  # tied weights are not missing
        super()._issue_warnings_after_load(without_tied_keys(self.model, load_result))

    # ---- loss ------------------------------------------------------------------------------

    def _forward_logps(self, model, model_kwargs, inputs):
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
        if self.offsets is not None and mode == "train" and AUX_INDEX in inputs:
            chosen, rejected = self._reward_deltas(inputs[AUX_INDEX])
            kwargs["delta_chosen"], kwargs["delta_rejected"] = chosen.to(dtype), rejected.to(dtype)
        return kwargs

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        ref_kwargs = {k: v for k, v in model_kwargs.items() if k != "output_router_logits"}
        ref_logps = None
        fused = getattr(self, "_fuse_reference", False) and mode == "train" \
            and AUX_INDEX in inputs and not self.precompute_ref_logps
        tail_ref = getattr(self, "_tail_reference", None) if mode == "train" \
            and not self.precompute_ref_logps else None
        products = self.offsets.products if fused else tail_ref
        plan = self._shared_prefix_plan(products) if products is not None else None
        if plan is not None:
            # The policy's forward records the first trainable block's input; the reference
            # tail starts from it, so the frozen prefix runs once per batch, not twice.
            with plan.recording() as captured:
                policy_logps, outputs = self._forward_logps(model, model_kwargs, inputs)
            captured = captured[0] if captured else None
            if fused:
                ref_logps = self.offsets.reference_logps(inputs, captured=captured)
            else:
                ref_logps = products.linearize(inputs, captured=captured).logps
        else:
            if fused:
                # Fused pass first: its transient tangents are freed before the policy's graph.
                ref_logps = self._reference_logps(inputs, ref_kwargs)
            policy_logps, outputs = self._forward_logps(model, model_kwargs, inputs)
        if ref_logps is None:
            ref_logps = self._reference_logps(inputs, ref_kwargs)
        ref_logps = ref_logps.to(policy_logps.dtype)
        policy_chosen, policy_rejected = policy_logps.chunk(2)
        ref_chosen, ref_rejected = ref_logps.chunk(2)
        kwargs = self._loss_kwargs(inputs, mode, policy_logps.dtype)
        stats = TokenStats(outputs, inputs)
        if self._objective:
            kwargs.update(inputs=inputs, stats=stats)
        result = self.loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, **kwargs)
        loss = result.losses.mean()
        log_preference_metrics(self, mode, loss, result, policy_chosen, policy_rejected)
        log_trl_metrics(self, mode, stats, inputs)
        if self.notebook is not None and mode == "train" and AUX_INDEX in inputs:
            loss = loss + self.notebook.penalty(inputs)   # per micro-batch, as the notebook
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(outputs.aux_loss.detach()).mean().item())
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss
