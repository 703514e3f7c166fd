"""The trainer's hooks for AuxDPO's offsets δ (:class:`OffsetsHooksMixin`).

:class:`~auxdpo.train.trainer.AuxDPOTrainer` builds its :class:`auxdpo.offsets.AuxOffsets`
here (products at θ₀ over the trainable tensors, keys of the prepared set), steps them after
each model optimizer step (:class:`~auxdpo.train.callbacks.OffsetsStepCallback` calls
``_step_offsets``), writes every row's (δ_chosen, δ_rejected) beside each save
(:data:`DELTAS_FILE`) and restores their state on resume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from auxdpo.files import honour_umask
from auxdpo.train.capacity import trainable_parameter_names
from auxdpo.train.checkpoint import OFFSETS_STEM, load_state
from auxdpo.train.offset_setup import DatasetBatches, offset_keys_for

__all__ = ["DELTAS_FILE", "OffsetsHooksMixin"]

logger = logging.getLogger("auxdpo.train.trainer")   # the trainer's log, as before the split

DELTAS_FILE = "aux_deltas.safetensors"


class OffsetsHooksMixin:
    """Building, stepping, saving and restoring the offsets, for ``AuxDPOTrainer``."""

    def _build_offsets(self):
        from auxdpo.offsets import AuxOffsets
        from auxdpo.offsets.products import DIFFERENCE_METHODS

        args = self.args
        policy = self.accelerator.unwrap_model(self.model)
        names = trainable_parameter_names(policy)
        jvp = args.aux_jvp
        dtype = dict(policy.named_parameters())[names[0]].dtype if names else torch.float32
        if jvp in DIFFERENCE_METHODS and torch.finfo(dtype).bits < 32:
            logger.info("AuxDPO: %s parameters, so A_Bᵀu by forward-mode AD instead of %s",
                        dtype, jvp)
            jvp = "forward"
        # Exact methods run the VJP on math attention too, so that all products see one A_B;
        # difference methods use the default kernels throughout.
        products = self._reference_products(
            truncate=args.aux_truncate_products, jvp_method=jvp,
            math_attention_vjp=jvp in ("forward", "double-vjp"))
        keys, self._response_coverage = offset_keys_for(self.train_dataset, args.aux_offsets)
        # The notebook preset weighs every response once (its own penalty, no ω): multiplicity
        # spares prepare() the reference pass of the π_ref weightings.
        weights = "multiplicity" if args.aux_preset else args.aux_null_weights
        return AuxOffsets(len(self.train_dataset), products, mode=args.aux_constraint,
                          keys=keys, null_weights=weights, delta_scale=args.aux_delta_scale,
                          delta_half_count=args.aux_delta_half_count,
                          lambda_null=args.lambda_null, lambda_amp=args.lambda_amp,
                          amp_sign=args.amp_sign, delta_lr=args.delta_lr,
                          delta_cap=args.notebook_delta_cap if args.aux_preset else
                          args.delta_cap, recompute_every=args.recompute_u_every,
                          dtype=products.dtype, optimizer=args.delta_optimizer,
                          keep_reference_graph=args.aux_keep_reference_graph)

    def dataset_batches(self) -> DatasetBatches:
        """The training set in unshuffled collated batches (for δ's whole-dataset passes)."""
        return DatasetBatches(self)

    def _step_offsets(self) -> None:
        if self.offsets is None or self._rows_since_step == 0:
            return
        metrics = self.offsets.step(global_batch_size=self._rows_since_step)
        self._rows_since_step = 0
        for key, value in (metrics or {}).items():
            name = key if key.startswith("aux/") else f"aux/{key}"
            self._metrics["train"][name].append(float(value))

    def _save_delta_table(self, folder: Path) -> None:
        from safetensors.torch import save_file

        index = torch.arange(len(self.train_dataset), device=self.args.device)
        with torch.no_grad():
            chosen, rejected = self._reward_deltas(index)
        tmp = folder / f".{DELTAS_FILE}.tmp"
        save_file({"delta_chosen": chosen.detach().cpu().contiguous(),
                   "delta_rejected": rejected.detach().cpu().contiguous()}, str(tmp))
        tmp.replace(folder / DELTAS_FILE)
        honour_umask(folder, DELTAS_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.offsets is None:
            return
        state = load_state(resume_from_checkpoint)
        if state is None:
            raise ValueError(f"checkpoint {resume_from_checkpoint} holds no AuxDPO offsets "
                             f"({OFFSETS_STEM}.json); cannot resume method auxdpo exactly")
        # u = A·δ as saved (exact resume: a recomputed u rounds differently in float32);
        # recompute_u_every keeps refreshing it on its schedule.
        self.offsets.load_state_dict(state, recompute=False)
