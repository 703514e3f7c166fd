"""A causal LM's trainable capacity as one flat parameter vector θ ``(d,)``.

The oracle needs log π_θ as a function of a flat θ (Jacobians, L-BFGS, the lab's geometry).
:class:`FlatCapacity` substitutes θ into the model with ``torch.func.functional_call``; the
other parameters stay at their base values. Presets:

=============  =============================================================================
``norm``       the final layer norm only (GPT-2's ``ln_f``: weight and bias)
``lora:<r>``   a rank-r update U·V of one matrix, the last block's attention input projection
               (GPT-2's fused ``attn.c_attn``); V starts at 0 so θ₀ is the base model, U is a
               fixed-seed N(0, 1/fan_in) draw. Implemented here (no PEFT) so θ stays flat.
``last-block`` the last transformer block, as :func:`auxdpo.train.capacity.apply_capacity`
``full``       every parameter, as :func:`auxdpo.train.capacity.apply_capacity`
``regex:<p>``  parameters whose name matches p, as :func:`auxdpo.train.capacity.apply_capacity`
=============  =============================================================================

The frozen prefix runs once per input. Every preset but ``full`` leaves the embeddings and the
blocks before the first trainable one at their base values, so their output does not depend on
θ: :meth:`FlatCapacity.logits` records the first trainable block's input once per input tensor
(the trainer's :class:`auxdpo.offsets.tail.TailPlan`) and runs only ``blocks[k:] → norm → head`` at each
θ, and the head only at the positions asked for. The first call compares that with the whole
model at θ₀; a mismatch (or a model the plan does not recognise) falls back to the whole model.
"""

from __future__ import annotations

import copy

import torch

from auxdpo.offsets.tail import CapturedInputs, find_tail, same_values
from auxdpo.train.capacity import apply_capacity, find_blocks

__all__ = ["FlatCapacity"]


class FlatCapacity:
    """θ ↦ the model's parameter dict, for one capacity preset.

    Args:
        model: a causal LM (not modified; a frozen copy is kept).
        spec: a preset from the module docstring.
        seed: seed of LoRA's fixed U factor.
        tail: run the frozen prefix once per input (module docstring); False: the whole
            model at every θ.
    """

    def __init__(self, model: torch.nn.Module, spec: str, *, seed: int = 0, tail: bool = True):
        self.spec = spec
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.base = {name: p.detach() for name, p in self.model.named_parameters()}
        self.lora_target: str | None = None
        if spec.startswith("lora:"):
            rank = spec.partition(":")[2]
            if not rank.isdigit() or int(rank) < 1:
                raise ValueError(f"capacity {spec!r}: rank must be a positive integer")
            self._init_lora(int(rank), seed)
        else:
            if spec == "norm":
                names = [n for n in self.base if _is_final_norm(n)]
                if not names:
                    raise ValueError("capacity 'norm': the model has no final norm (ln_f/norm)")
            else:
                probe = copy.deepcopy(self.model)
                names = apply_capacity(probe, spec).trainable
            self.names = names
            self.theta0 = torch.cat([self.base[n].reshape(-1) for n in names])
            self.shapes = [self.base[n].shape for n in names]
        self.plan, self.tail_reason = (find_tail(self.model, self.names) if tail
                                       else (None, "off"))
        self._captures: list[tuple[torch.Tensor, CapturedInputs]] = []

    def _init_lora(self, rank: int, seed: int) -> None:
        prefix, blocks = find_blocks(self.model)
        last = f"{prefix}.{len(blocks) - 1}"
        candidates = [f"{last}.{n}.weight" for n in ("attn.c_attn", "self_attn.q_proj")]
        target = next((c for c in candidates if c in self.base), None)
        if target is None:
            raise ValueError(f"capacity {self.spec!r}: no attn.c_attn / self_attn.q_proj in "
                             f"{last}")
        weight = self.base[target]
        rows, cols = weight.shape
        gen = torch.Generator().manual_seed(int(seed))
        self.lora_u = torch.randn(rows, rank, generator=gen, dtype=weight.dtype) / rows ** 0.5
        self.lora_target, self.names = target, [target]
        self.shapes = [torch.Size([rank, cols])]
        self.theta0 = torch.zeros(rank * cols, dtype=weight.dtype)   # V = 0: base model

    @property
    def dim(self) -> int:
        """Trainable dimension d."""
        return int(self.theta0.numel())

    def parameters(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The full parameter dict with the trainable part taken from ``theta`` ``(d,)``."""
        if theta.shape != (self.dim,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}, expected ({self.dim},)")
        params = dict(self.base)
        if self.lora_target is not None:
            update = self.lora_u @ theta.view(self.shapes[0])          # U·V, (rows, cols)
            params[self.lora_target] = self.base[self.lora_target] + update
            return params
        offset = 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            params[name] = theta[offset:offset + size].view(shape)
            offset += size
        return params

    def logits(self, theta: torch.Tensor, input_ids: torch.Tensor, start: int = 0
               ) -> torch.Tensor:
        """Logits ``(N, T − start, V)`` of ``input_ids`` ``(N, T)`` at θ, at positions
        ``start`` .. T − 1."""
        captured = self._capture(input_ids) if self.plan is not None else None
        if captured is None:
            return self._full_logits(theta, input_ids)[:, start:]
        return self.plan.logits(captured, self.parameters(theta), start)

    def _full_logits(self, theta: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        out = torch.func.functional_call(self.model, self.parameters(theta), (input_ids,),
                                         {"attention_mask": mask})
        return out.logits

    def _capture(self, input_ids: torch.Tensor) -> CapturedInputs | None:
        """The tail's inputs for ``input_ids`` (kept per tensor object: the tasks score the same
        tensors at every θ); None once the check at θ₀ has failed."""
        for tensor, captured in self._captures:
            if tensor is input_ids:
                return captured
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        captured = self.plan.capture(batch)
        if not self._captures:
            with torch.no_grad():
                whole = self._full_logits(self.theta0, input_ids)
                part = self.plan.logits(captured, self.parameters(self.theta0))
            if not same_values(part, whole):
                self.plan, self.tail_reason = None, "tail logits differ from the whole model's"
                return None
        self._captures = [*self._captures[-3:], (input_ids, captured)]
        return captured


def _is_final_norm(name: str) -> bool:
    return name.startswith(("transformer.ln_f.", "model.norm."))
