"""The reference policy π_ref: a frozen copy of the model, made before training."""

from __future__ import annotations

import copy
import types

import torch

__all__ = ["frozen_copy", "restore_class_forwards"]


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
