"""How the trainer gets log π_ref for a batch: one :class:`ReferencePass` per mode, chosen once
when the trainer is built (:func:`choose_reference_passes`).

Every pass has one method, :meth:`ReferencePass.run`: given a batch and the policy's forward (a
callable), it runs both and returns (log π_ref ``(2B,)``, the forward's result). The pass
decides the order and what the two share:

:class:`PrecomputedReference`  the ``ref_*_logps`` columns (``precompute_ref_log_probs``).
:class:`ModelReference`        a no-grad forward of the frozen reference copy, or of the policy
                               with its adapters disabled (LoRA): TRL's reference pass.
:class:`TailReference`         dpo/ipo/dpop with a frozen prefix: the reference through the
                               trainable tail only, from the input the policy's own forward
                               hands its first trainable block (the prefix runs once).
:class:`FusedReference`        AuxDPO: the offsets' products pass gives log π_θ₀, A_Bᵀu and
                               what the step's VJP needs, in one pass (sharing the prefix too).

Evaluation batches always take the precomputed columns or the model's reference pass.
The frozen reference copy itself is made here too (:func:`frozen_copy`).
"""

from __future__ import annotations

import copy
import logging
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from auxdpo.offsets.collectives import sharding_engine
from auxdpo.offsets.products import ReferenceProducts
from auxdpo.offsets.tail import TailPlan, find_tail
from auxdpo.train.capacity import trainable_parameter_names
from auxdpo.train.data import AUX_INDEX, PREF_PROB, WEIGHT

__all__ = ["NON_MODEL_KEYS", "FusedReference", "ModelReference", "PathOptions",
           "PrecomputedReference", "ReferencePass", "TailReference", "choose_reference_passes",
           "frozen_copy", "model_inputs", "reference_products", "restore_class_forwards"]

logger = logging.getLogger(__name__)

# Batch columns the model's forward does not take.
NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps",
                            AUX_INDEX, PREF_PROB, WEIGHT})

PolicyPass = Callable[[], Any]


@dataclass(frozen=True)
class PathOptions:
    """How the trainer computes what its config asks for. Every choice gives the same
    numbers up to round-off (measured: docs/benchmarks.md, tests/train/test_train_fused.py);
    the defaults are the fastest measured. For tests and benchmarks that compare the paths:
    ``AuxDPOTrainer(..., path_options=PathOptions(...))``; users never need them.

    ``jvp``: how A_Bᵀu is computed (:data:`auxdpo.offsets.products.JVP_METHODS`); None:
    central-difference, forward (exact) for 16-bit models and the notebook preset.
    ``fuse_reference``: AuxDPO's loss takes log π_ref from the offsets' products pass.
    ``share_prefix``: the reference tail starts from the policy forward's input to the first
    trainable block (AuxDPO, and dpo/ipo/dpop's ``tail_reference``).
    ``truncate_products``: the products run through the trainable tail only.
    ``keep_reference_graph``: the fused pass keeps the tail's graph until the offsets' step.
    ``delta_optimizer``: adam, or sgd (plain, lazy: it shows δ's gradients in tests).
    ``recompute_u_every``: rebuild the global mode's u = A·δ every this many steps (0: never;
    it is restored exactly on resume).
    """

    jvp: str | None = None
    fuse_reference: bool = True
    share_prefix: bool = True
    truncate_products: bool = True
    keep_reference_graph: bool = False
    delta_optimizer: str = "adam"
    recompute_u_every: int = 0


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy with every parameter frozen, in eval mode: the reference policy π_ref.

    Under DeepSpeed ZeRO-3, transformers builds the model inside ``zero.Init``: each
    parameter's ``.data`` is an empty placeholder and its shard lives in ``ds_tensor``.
    ``Parameter.__deepcopy__`` copies ``.data`` only, so a plain deep copy would be a model of
    empty tensors. There each parameter is gathered (one at a time, on every process) and
    copied into a plain parameter in CPU memory (ties kept); ``prepare_deepspeed`` moves the
    copy back to the device one parameter at a time as it shards it again.
    """
    memo = {}
    sharded = [p for p in model.parameters() if hasattr(p, "ds_id")]  # ZeRO-3 partitioned
    if sharded:
        import deepspeed

        for param in sharded:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                memo[id(param)] = torch.nn.Parameter(param.data.detach().to("cpu", copy=True),
                                                     requires_grad=False)
    reference = copy.deepcopy(model, memo)
    restore_class_forwards(reference, model)  # a forward TRL patched would call the policy
    reference.requires_grad_(False)
    return reference.eval()


def restore_class_forwards(copy_root: torch.nn.Module, original_root: torch.nn.Module) -> int:
    """Undo instance-level ``forward`` wrappers in ``copy_root`` that call into ``original_root``.

    TRL's fused LM head replaces ``model.forward`` by a closure over the original bound
    forward. A deep copy rebinds the method but keeps the closure, so the "frozen" copy's plain
    forward would run the live policy (a model passed to a second trainer). Each such wrapper
    is removed, so the class forward is used; TRL adds its fused head to the reference again.
    Returns how many were removed.
    """
    originals = {id(m) for m in original_root.modules()}
    removed = 0
    for module in copy_root.modules():
        forward = module.__dict__.get("forward")
        if forward is None:
            continue
        func = forward.__func__ if isinstance(forward, types.MethodType) else forward
        for cell in getattr(func, "__closure__", None) or ():
            try:
                target = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if id(getattr(target, "__self__", target)) in originals:
                del module.__dict__["forward"]
                removed += 1
                break
    return removed


def model_inputs(inputs: dict, *, router_logits: bool = False) -> dict:
    """The keyword arguments of a model forward on a collated batch."""
    kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
    kwargs["use_cache"] = False
    if router_logits:
        kwargs["output_router_logits"] = True
    return kwargs


def reference_products(trainer, **options) -> ReferenceProducts:
    """ReferenceProducts at θ₀ over the policy's trainable tensors: read live from the frozen
    reference copy when there is one, else θ₀ snapshotted from the policy (LoRA: adapters at
    initialisation, B = 0)."""
    policy = trainer.accelerator.unwrap_model(trainer.model)
    names = trainable_parameter_names(policy)
    options.setdefault("average", trainer.args.logp_average)
    if trainer.ref_model is not None and not is_peft_model(policy):
        reference = trainer.accelerator.unwrap_model(trainer.ref_model)
        return ReferenceProducts(reference, names, snapshot=False, **options)
    return ReferenceProducts(policy, names, **options)


class ReferencePass:
    """log π_ref of a batch, run beside the policy's forward."""

    def run(self, inputs: dict, policy: PolicyPass) -> tuple[torch.Tensor, Any]:
        """(log π_ref ``(2B,)``, ``policy()``'s result); the policy's forward runs first."""
        result = policy()
        return self.logps(inputs), result

    def logps(self, inputs: dict) -> torch.Tensor:
        raise NotImplementedError


class PrecomputedReference(ReferencePass):
    """The ``ref_chosen_logps``/``ref_rejected_logps`` columns TRL computed before training
    (divided by the response lengths when log-probs are averaged)."""

    def __init__(self, average: bool) -> None:
        self.average = average

    def logps(self, inputs: dict) -> torch.Tensor:
        total = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        if self.average:
            total = total / inputs["completion_mask"][:, 1:].sum(dim=1).clamp(min=1)
        return total


class ModelReference(ReferencePass):
    """A no-grad forward of the frozen reference copy, or of the policy with its adapters
    disabled (a PEFT policy without a reference copy; TRL's ``ref`` adapter when present)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def logps(self, inputs: dict) -> torch.Tensor:
        trainer = self.trainer
        kwargs = model_inputs(inputs)
        with torch.no_grad(), disable_gradient_checkpointing(
                trainer.model, trainer.args.gradient_checkpointing_kwargs):
            if is_peft_model(trainer.model) and trainer.ref_model is None:
                unwrapped = trainer.accelerator.unwrap_model(trainer.model)
                adapter = "ref" if "ref" in unwrapped.peft_config else None
                with use_adapter(unwrapped, adapter_name=adapter):
                    return trainer.sequence_logps(trainer.model, kwargs, inputs)[0]
            return trainer.sequence_logps(trainer.ref_model, kwargs, inputs)[0]


class _PrefixSharing(ReferencePass):
    """A pass through the products' tail that may start from the policy forward's record of
    the first trainable block's input (``plan``; None: the products run their own prefix).
    The products check the first shared input against their own prefix pass and refuse
    sharing from then on if they differ (``products.share_prefix``)."""

    def __init__(self, products: ReferenceProducts, plan: TailPlan | None) -> None:
        self.products, self.plan = products, plan

    def run(self, inputs: dict, policy: PolicyPass) -> tuple[torch.Tensor, Any]:
        if self.plan is None or not self.products.share_prefix:
            return self.logps(inputs), policy()
        with self.plan.recording() as captured:
            result = policy()
        return self.logps(inputs, captured[0] if captured else None), result

    def logps(self, inputs: dict, captured=None) -> torch.Tensor:
        raise NotImplementedError


class TailReference(_PrefixSharing):
    """dpo/ipo/dpop: log π_ref through the trainable tail of the reference products, from
    the policy forward's input to that tail; ``fallback`` (TRL's pass) once the products
    refuse the shared input."""

    def __init__(self, products: ReferenceProducts, plan: TailPlan,
                 fallback: ReferencePass) -> None:
        super().__init__(products, plan)
        self.fallback = fallback

    def run(self, inputs: dict, policy: PolicyPass) -> tuple[torch.Tensor, Any]:
        if not self.products.share_prefix:
            return self.fallback.run(inputs, policy)
        return super().run(inputs, policy)

    def logps(self, inputs: dict, captured=None) -> torch.Tensor:
        return self.products.linearize(inputs, captured=captured).logps


class FusedReference(_PrefixSharing):
    """AuxDPO: log π_θ₀ from the offsets' products pass, which also files A_Bᵀu and the
    step's VJP inputs for this micro-batch. Without a shared prefix it runs before the
    policy's forward, so that its transient tangents are freed before the policy's graph."""

    def __init__(self, offsets, plan: TailPlan | None) -> None:
        super().__init__(offsets.products, plan)
        self.offsets = offsets

    def logps(self, inputs: dict, captured=None) -> torch.Tensor:
        return self.offsets.reference_logps(inputs, captured=captured)


def _tail_products(trainer) -> ReferenceProducts | None:
    """dpo/ipo/dpop's tail-only products, or None (reason logged) when the run cannot use
    them: sharded tensors, or no frozen prefix before the trainable tensors."""
    engine = sharding_engine(trainer.accelerator.unwrap_model(trainer.model))
    if engine is not None:
        logger.warning("tail_reference is off under %s (the tail's products need the full, "
                       "unsharded tensors); using the whole-model reference pass", engine)
        return None
    products = reference_products(trainer, truncate=True)
    if products.tail_plan is None or products.tail_plan.first == 0:
        logger.info("tail_reference: no frozen prefix before the trainable tensors; using the "
                    "whole-model reference pass")
        return None
    return products


def _prefix_plan(trainer, products: ReferenceProducts, wanted: bool) -> TailPlan | None:
    """The policy's own tail plan at the products' depth, whose forward hands the products
    their tail's input, or None: needs sharing wanted, truncated products that allow it, no
    mixed precision (the products run without autocast)."""
    if not (wanted and products.share_prefix and products.tail_plan is not None
            and trainer.accelerator.mixed_precision == "no"):
        return None
    # The products may run on the frozen reference copy: hook the policy's own block at the
    # same depth (the prefixes before it are identical frozen copies).
    policy = trainer.accelerator.unwrap_model(trainer.model)
    plan, _ = find_tail(policy, trainable_parameter_names(policy))
    return plan if plan is not None and plan.first == products.tail_plan.first else None


def choose_reference_passes(trainer, options: PathOptions) -> dict[str, ReferencePass]:
    """``{"train": pass, "eval": pass}`` for ``trainer``, decided once at construction."""
    args = trainer.args
    if args.precompute_ref_log_probs:
        precomputed = PrecomputedReference(bool(args.logp_average))
        return {"train": precomputed, "eval": precomputed}
    model_pass = ModelReference(trainer)
    train: ReferencePass = model_pass
    offsets = trainer.offsets
    if offsets is not None:
        if (trainer.aux.fuses_reference and options.fuse_reference
                and offsets.mode in ("global", "batch")
                and offsets.products.dtype in (torch.float32, torch.float64)):
            train = FusedReference(offsets, _prefix_plan(trainer, offsets.products,
                                                         options.share_prefix))
    elif args.tail_reference:
        products = _tail_products(trainer)
        plan = _prefix_plan(trainer, products, True) if products is not None else None
        if plan is not None:
            train = TailReference(products, plan, model_pass)
    return {"train": train, "eval": model_pass}
