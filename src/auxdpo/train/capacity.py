"""Capacity presets: which parameters of a causal LM are trainable.

Presets (the paper's Sec. 7.1 ablations, one flag each):

=================  ==========================================================================
``full``           every parameter
``last-block``     the last transformer block only
``last:<f>``       the last ⌈f·L⌉ of the L transformer blocks, by depth (embeddings, final norm
                   and LM head stay frozen; ``full`` is the preset that trains them)
``lora:<r>``       LoRA of rank r on the attention projections of the last block: q/k/v/o_proj
                   for Llama/Qwen-style models; GPT-2's fused ``attn.c_attn`` (q, k and v in one
                   matrix) and ``attn.c_proj`` (o). The base model is frozen; the reference is
                   the model with adapters disabled.
``regex:<p>``      parameters whose full name matches ``re.search(p, name)``
=================  ==========================================================================

Transformer blocks are found as the ``nn.ModuleList`` whose length is the config's number of
hidden layers (``model.layers`` in Llama/Qwen, ``transformer.h`` in GPT-2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch.nn as nn

from auxdpo.train.config import parse_capacity

__all__ = ["CapacityPlan", "apply_capacity", "find_blocks", "lora_target_modules",
           "trainable_parameter_names"]

_LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_GPT2_ATTENTION = ("attn.c_attn", "attn.c_proj")


@dataclass
class CapacityPlan:
    """What a preset makes trainable.

    ``peft_config`` is set only for LoRA presets: it is handed to the trainer, which wraps the
    model (the parameter flags are then PEFT's). ``trainable`` lists the parameter names made
    trainable for the other presets.
    """

    spec: str
    kind: str
    trainable: list[str] = field(default_factory=list)
    peft_config: object | None = None


def _num_layers(model: nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("capacity: the model config names no number of layers "
                     "(num_hidden_layers / n_layer)")


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer blocks as ``(qualified name, ModuleList)``, shallowest match first."""
    num_layers = _num_layers(model)
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == num_layers]
    if not candidates:
        raise ValueError(f"capacity: found no list of {num_layers} transformer blocks in "
                         f"{type(model).__name__}")
    return min(candidates, key=lambda item: item[0].count("."))


def lora_target_modules(model: nn.Module) -> list[str]:
    """Qualified names of the last block's attention projections (q, k, v, o)."""
    prefix, blocks = find_blocks(model)
    last = f"{prefix}.{len(blocks) - 1}"
    names = [name for name, _ in blocks[-1].named_modules()]
    for suffixes in (_LLAMA_ATTENTION, _GPT2_ATTENTION):
        found = [f"{last}.{n}" for n in names if any(n.endswith(s) for s in suffixes)]
        if len(found) == len(suffixes):
            return found
    raise ValueError(f"capacity lora: no q/k/v/o_proj or attn.c_attn/c_proj modules in {last}")


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad``, in ``named_parameters`` order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _lora_config(model: nn.Module, rank: int, alpha: float | None):
    from peft import LoraConfig

    targets = lora_target_modules(model)
    modules = dict(model.named_modules())
    # GPT-2's Conv1D stores weights as (in, out): PEFT must know to transpose them.
    fan_in_fan_out = any(type(modules[t]).__name__ == "Conv1D" for t in targets)
    return LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha,
                      lora_dropout=0.0, target_modules=targets, bias="none",
                      fan_in_fan_out=fan_in_fan_out, task_type="CAUSAL_LM")


def apply_capacity(model: nn.Module, spec: str, *, lora_alpha: float | None = None
                   ) -> CapacityPlan:
    """Set ``requires_grad`` on ``model`` as the preset says (LoRA: return a PEFT config)."""
    kind, arg = parse_capacity(spec)
    plan = CapacityPlan(spec=spec, kind=kind)
    if kind == "lora":
        plan.peft_config = _lora_config(model, int(arg), lora_alpha)
        return plan
    if kind == "full":
        wanted = lambda name: True  # noqa: E731
    elif kind == "regex":
        pattern = re.compile(str(arg))
        wanted = lambda name: pattern.search(name) is not None  # noqa: E731
    else:
        prefix, blocks = find_blocks(model)
        count = int(arg) if kind == "last_blocks" else math.ceil(float(arg) * len(blocks) - 1e-9)
        first = len(blocks) - count
        chosen = tuple(f"{prefix}.{i}." for i in range(first, len(blocks)))
        wanted = lambda name: name.startswith(chosen)  # noqa: E731
    for name, param in model.named_parameters():
        param.requires_grad_(wanted(name))
    plan.trainable = trainable_parameter_names(model)
    if not plan.trainable:
        raise ValueError(f"capacity {spec!r} makes no parameter trainable")
    return plan
