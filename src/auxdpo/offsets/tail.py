"""The trainable tail of a causal LM: products with A_B that skip the frozen prefix.

When only the last blocks are trainable (``last-block``, ``last:<f>``, ``lora:<r>`` on the last
block, a regex inside the blocks), ∇_θ log π(a|s) does not depend on the layers before the
first trainable block: they only produce that block's input. :class:`TailPlan` finds the
structure

    embeddings → blocks[0..k-1] (frozen prefix) → blocks[k..L-1] → final norm → LM head

and :meth:`TailPlan.capture` runs the prefix once, without a graph, stopping at block k with a
forward pre-hook that records the block's inputs (hidden states and everything the model hands
to a block: attention mask, rotary cos/sin, position ids, cache position). The products then
run only ``blocks[k:] → norm → head`` under ``torch.func.functional_call``.

Recognised: GPT-2 (``transformer.h`` + ``ln_f``), Llama, Qwen2, Qwen3 and other models whose
blocks are ``model.layers`` followed by ``model.norm``, plain or PEFT-wrapped. Anything else,
a trainable tensor outside the tail (embeddings, a tied LM head), or a tail whose log-probs do
not match the whole model's on the first batch, falls back to the full pass
(:class:`auxdpo.offsets.products.ReferenceProducts` checks and logs which path it uses, once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from auxdpo.logps import MODEL_INPUT_KEYS

__all__ = ["CapturedInputs", "TailPlan", "find_tail", "same_inputs", "same_values"]

_NORM_NAMES = ("ln_f", "norm", "final_layernorm")


class _Captured(Exception):
    """Raised by the pre-hook to stop the prefix forward once the tail's input is known."""


@dataclass
class CapturedInputs:
    """What the model hands its first trainable block: ``args[0]`` is the hidden states
    ``(N, T, E)``; the rest (mask, rotary cos/sin, position ids, ...) is passed on as is."""

    args: tuple
    kwargs: dict


class _Tail(nn.Module):
    """``blocks[k:] → norm → head`` as one module (it shares, never copies, the tensors)."""

    def __init__(self, blocks: list[nn.Module], norm: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm
        self.head = head

    def forward(self, inputs: CapturedInputs, rows: torch.Tensor, positions: torch.Tensor,
                targets: torch.Tensor | None) -> torch.Tensor:
        """Log-probs ``(M,)`` of ``targets`` predicted at (``rows``, ``positions``): the LM head
        runs on those M positions only, never on prompt or padding positions. Without
        ``targets``: the logits ``(M, V)`` at those positions."""
        hidden, rest = inputs.args[0], inputs.args[1:]
        for block in self.blocks:
            output = block(hidden, *rest, **inputs.kwargs)
            hidden = output[0] if isinstance(output, tuple) else output
        logits = self.head(self.norm(hidden[rows, positions]))        # (M, V)
        if targets is None:
            return logits
        picked = torch.gather(logits, 1, targets.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)


@dataclass
class TailPlan:
    """Where the trainable tail starts and how its tensors are named.

    ``model_to_tail`` maps a model parameter/buffer name to its name inside the tail module;
    ``first`` is the index of the first trainable block (``num_blocks``, their count, when only
    the final norm and head are: then ``first_block`` is the final norm).
    """

    model: nn.Module
    tail: _Tail
    first_block: nn.Module
    first: int
    num_blocks: int
    model_to_tail: dict[str, str]

    def _record(self, store: list[CapturedInputs], *, stop: bool):
        """Pre-hook on the first trainable block: the first call's inputs (detached) go into
        ``store``; with ``stop`` the forward is then abandoned. Returns the hook's handle."""
        def hook(module, args, kwargs):
            if not store:
                store.append(CapturedInputs(_detached(tuple(args)), _detached(dict(kwargs))))
            if stop:
                raise _Captured

        return self.first_block.register_forward_pre_hook(hook, with_kwargs=True)

    def capture(self, batch: Mapping[str, torch.Tensor]) -> CapturedInputs:
        """Run the frozen prefix on ``batch`` (no graph) and return the tail's inputs."""
        store: list[CapturedInputs] = []
        kwargs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
        kwargs["use_cache"] = False
        handle = self._record(store, stop=True)
        try:
            with torch.no_grad():
                self.model(**kwargs)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not store:
            raise RuntimeError("the model's forward never reached its first trainable block")
        return store[0]

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[CapturedInputs]]:
        """Record, without stopping it, what the first trainable block receives during a
        forward run inside the block (the policy's own forward); yields a list that holds the
        first call's inputs, detached, once the forward has run. Gradient checkpointing's
        recomputation in the backward pass comes after the block and is not recorded."""
        store: list[CapturedInputs] = []
        handle = self._record(store, stop=False)
        try:
            yield store
        finally:
            handle.remove()

    def logits(self, inputs: CapturedInputs, params: Mapping[str, torch.Tensor],
               start: int = 0) -> torch.Tensor:
        """Logits ``(N, T − start, V)`` from the tail at positions ``start`` .. T − 1 of every
        row, with ``params`` (model names) substituted."""
        num_rows, length = inputs.args[0].shape[:2]
        device = inputs.args[0].device
        rows = torch.arange(num_rows, device=device).repeat_interleave(length - start)
        positions = torch.arange(start, length, device=device).repeat(num_rows)
        out = torch.func.functional_call(self.tail, self._tail_params(params),
                                         args=(inputs, rows, positions, None), strict=False)
        return out.view(num_rows, length - start, -1)

    def _tail_params(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {self.model_to_tail[name]: value for name, value in params.items()
                if name in self.model_to_tail}

    def logps(self, inputs: CapturedInputs, batch: Mapping[str, torch.Tensor],
              params: Mapping[str, torch.Tensor], *, average: bool) -> torch.Tensor:
        """``(N,)`` log-probs from the tail, with ``params`` (model names) substituted: the
        sum (or mean) of next-token log-probs over each row's completion tokens, as
        :func:`auxdpo.logps.sequence_logps` (the same shift), with the LM head applied only
        at the scored positions."""
        tail_params = self._tail_params(params)
        mask = batch["completion_mask"][:, 1:].bool()
        rows, positions = torch.nonzero(mask, as_tuple=True)
        targets = batch["input_ids"][:, 1:][rows, positions]
        token_logps = torch.func.functional_call(
            self.tail, tail_params, args=(inputs, rows, positions, targets), strict=False)
        total = token_logps.new_zeros(mask.shape[0]).index_add(0, rows, token_logps)
        if average:
            return total / mask.sum(dim=1).clamp(min=1).to(total.dtype)
        return total


def _detached(value):
    """``value`` with every tensor in it (tuples, lists, dicts) detached from its graph."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def same_inputs(a: CapturedInputs, b: CapturedInputs) -> bool:
    """Whether two captures hold the same hidden states (to float round-off, relative)."""
    return same_values(a.args[0], b.args[0])


def same_values(x, y) -> bool:
    """Whether tensors ``x`` and ``y`` agree to their dtype's round-off, relative to
    max(|y|, 1): 1e-10 in float64, 1e-5 in float32, 1e-2 below."""
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape:
        return False
    tolerance = {64: 1e-10, 32: 1e-5}.get(torch.finfo(x.dtype).bits, 1e-2)
    scale = max(float(y.abs().max()), 1.0) if y.numel() else 1.0
    return bool(torch.isfinite(x).all()) and float((x - y).abs().max()) <= tolerance * scale


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    layers = next((getattr(config, a) for a in ("num_hidden_layers", "n_layer")
                   if isinstance(getattr(config, a, None), int)), None)
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == layers]
    if not candidates:
        return None
    return min(candidates, key=lambda item: item[0].count("."))


def find_tail(model: nn.Module, param_names: list[str]) -> tuple[TailPlan | None, str]:
    """The tail plan for trainable tensors ``param_names``, or ``(None, reason)``."""
    found = _find_blocks(model)
    if found is None:
        return None, "no list of transformer blocks found"
    prefix, blocks = found
    modules = dict(model.named_modules())
    parent = prefix.rpartition(".")[0]
    norm_name = next((f"{parent}.{n}" if parent else n for n in _NORM_NAMES
                      if (f"{parent}.{n}" if parent else n) in modules), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((name for name, m in modules.items() if m is head and name), None)
    if norm_name is None or head_name is None:
        return None, "no final norm or LM head next to the blocks"
    block_of = {}
    for name in param_names:
        if not name.startswith(prefix + "."):
            if not name.startswith((norm_name + ".", head_name + ".")):
                return None, f"trainable tensor {name} lies outside the blocks, norm and head"
            continue
        block_of[name] = int(name[len(prefix) + 1:].split(".")[0])
    # Only the final norm and/or the head trainable: the tail has no block, and its input is
    # the norm's (a pre-hook on the norm records it).
    first = min(block_of.values(), default=len(blocks))
    tail_prefixes = tuple([f"{prefix}.{i}." for i in range(first, len(blocks))]
                          + [norm_name + ".", head_name + "."])
    wanted = set(param_names)
    trainable = {id(p) for n, p in model.named_parameters() if n in wanted}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in trainable and not name.startswith(tail_prefixes):
            return None, f"trainable tensor {name} is shared with the frozen prefix (tied)"
    tail = _Tail(list(blocks)[first:], modules[norm_name], head)
    by_id = {}
    for name, tensor in list(tail.named_parameters(remove_duplicate=False)) + \
            list(tail.named_buffers(remove_duplicate=False)):
        by_id.setdefault(id(tensor), name)
    model_to_tail = {name: by_id[id(t)] for name, t in
                     list(model.named_parameters()) + list(model.named_buffers())
                     if id(t) in by_id}
    entry = blocks[first] if first < len(blocks) else modules[norm_name]
    where = f"block {first} of {len(blocks)}" if first < len(blocks) else "the final norm"
    return TailPlan(model, tail, entry, first, len(blocks), model_to_tail), f"tail from {where}"
