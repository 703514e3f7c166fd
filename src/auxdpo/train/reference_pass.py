"""How the trainer gets log π_ref for the loss (:class:`ReferencePassMixin`).

Four paths, chosen per batch: the offsets' fused pass (AuxDPO: the same products pass gives
log π_θ₀, A_Bᵀu and the tail's input for the step); the tail-only reference of dpo/ipo/dpop
(``tail_reference``); the precomputed columns (``precompute_ref_log_probs``); else a no-grad
forward of the frozen reference copy or of the policy with its adapters disabled. The shared
prefix (:meth:`ReferencePassMixin._shared_prefix_plan`) lets the policy's own forward hand the
reference tail its input, so the frozen prefix runs once per batch.
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import is_peft_model
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from auxdpo.offsets.tail import find_tail
from auxdpo.train.capacity import trainable_parameter_names
from auxdpo.train.data import AUX_INDEX

__all__ = ["ReferencePassMixin"]

logger = logging.getLogger("auxdpo.train.trainer")   # the trainer's log, as before the split


class ReferencePassMixin:
    """Reference products and reference log-probs, for ``AuxDPOTrainer``."""

    def _reference_products(self, **options):
        """ReferenceProducts at θ₀ over the policy's trainable tensors."""
        from auxdpo.offsets.products import ReferenceProducts

        policy = self.accelerator.unwrap_model(self.model)
        names = trainable_parameter_names(policy)
        options.setdefault("average", self.args.logp_average)
        if self.ref_model is not None and not is_peft_model(policy):
            # The frozen reference copy stays at θ₀: read it live instead of snapshotting θ₀.
            reference = self.accelerator.unwrap_model(self.ref_model)
            return ReferenceProducts(reference, names, snapshot=False, **options)
        # LoRA: θ₀ = the adapters at initialisation (B = 0), snapshotted by ReferenceProducts.
        return ReferenceProducts(policy, names, **options)

    def _build_tail_reference(self):
        """dpo/ipo/dpop with ``tail_reference``: products used only for their tail log-probs,
        or None (with the reason logged) when the capacity has no frozen prefix to share."""
        if not self.args.tail_reference or self.args.method == "auxdpo" \
                or self.args.precompute_ref_log_probs:
            return None
        from auxdpo.offsets.collectives import sharding_engine

        engine = sharding_engine(self.accelerator.unwrap_model(self.model))
        if engine is not None:
            logger.warning("tail_reference is off under %s (the tail's products need the "
                           "full, unsharded tensors); using the whole-model reference pass",
                           engine)
            return None
        products = self._reference_products(truncate=True)
        if products.tail_plan is None or products.tail_plan.first == 0:
            logger.info("tail_reference: no frozen prefix before the trainable tensors; using "
                        "the whole-model reference pass")
            return None
        return products

    def _reference_logps(self, inputs, model_kwargs) -> torch.Tensor:
        if getattr(self, "_fuse_reference", False) and self.model.training \
                and AUX_INDEX in inputs and not self.precompute_ref_logps:
            # One products pass: log π_θ₀ for the loss, A_Bᵀu and the prefix for the step.
            return self.offsets.reference_logps(inputs)
        if self.precompute_ref_logps:
            total = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
            if self.args.logp_average:
                total = total / inputs["completion_mask"][:, 1:].sum(dim=1).clamp(min=1)
            return total
        with torch.no_grad(), disable_gradient_checkpointing(
                self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                adapter = "ref" if "ref" in unwrapped.peft_config else None
                with use_adapter(unwrapped, adapter_name=adapter):
                    return self._forward_logps(self.model, model_kwargs, inputs)[0]
            return self._forward_logps(self.ref_model, model_kwargs, inputs)[0]

    def _shared_prefix_plan(self, products):
        """The policy's tail plan, whose forward hands ``products`` the tail's input, or None:
        needs ``aux_share_prefix`` (AuxDPO) or ``tail_reference`` (the others), truncated
        products, no mixed precision (the products run without autocast) and no failed
        first-batch check (see ReferenceProducts)."""
        wanted = self.args.aux_share_prefix if self.offsets is not None else True
        if not (wanted and products.share_prefix
                and products.tail_plan is not None
                and self.accelerator.mixed_precision == "no"):
            return None
        if self._policy_tail is None:
            # The products may run on the frozen reference copy: hook the policy's own block
            # at the same depth (the prefixes before it are identical frozen copies).
            policy = self.accelerator.unwrap_model(self.model)
            plan, _ = find_tail(policy, trainable_parameter_names(policy))
            same = plan is not None and plan.first == products.tail_plan.first
            self._policy_tail = plan if same else False
        return self._policy_tail or None
