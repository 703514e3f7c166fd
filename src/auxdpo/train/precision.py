"""A start-up check that the trainable weights can take the optimizer's steps.

A weight stored in bfloat16 (float16) moves only when its update is at least half the spacing
of representable numbers around it, |w|·eps/2 (eps = 2⁻⁷ for bfloat16). Adam's step is about
the learning rate per coordinate, so with weights loaded in 16 bits and a preference-tuning
learning rate (5e-7 … 1e-5) most updates round to nothing: the run trains a fraction of its
weights and reports no error. Mixed precision (weights in float32, ``bf16: true``) or an
engine that keeps float32 master weights (DeepSpeed ZeRO's bf16 mode) does not have this
problem.
"""

from __future__ import annotations

import torch

__all__ = ["stalled_share", "stalled_weights_message"]

LOW_PRECISION = (torch.bfloat16, torch.float16)


def stalled_share(parameters, learning_rate: float) -> tuple[float, torch.dtype | None]:
    """Share of the trainable 16-bit weights on which a step of ``learning_rate`` rounds
    away (|w|·eps/2 > learning_rate), and their dtype (None when no trainable weight is
    16-bit)."""
    stalled = total = 0
    dtype = None
    with torch.no_grad():
        for p in parameters:
            if not p.requires_grad or p.dtype not in LOW_PRECISION or p.numel() == 0:
                continue
            dtype = p.dtype
            half_spacing = p.detach().abs().float() * (torch.finfo(p.dtype).eps / 2)
            stalled += int((half_spacing > learning_rate).sum())
            total += p.numel()
    return (stalled / total if total else 0.0), dtype


def stalled_weights_message(parameters, learning_rate: float, threshold: float = 0.5
                            ) -> str | None:
    """One warning line when more than ``threshold`` of the trainable weights are 16-bit and
    too large to move by a step of ``learning_rate``; None otherwise."""
    share, dtype = stalled_share(parameters, learning_rate)
    if dtype is None or share <= threshold:
        return None
    name = str(dtype).replace("torch.", "")
    return (f"{share:.0%} of the trainable weights are {name} and too large to move by a step "
            f"of learning_rate={learning_rate:g} (it rounds to nothing): load the model in "
            "float32 (model_init_kwargs: {dtype: float32}, TRL's default) and keep bf16: true "
            "for bf16 compute, or train under DeepSpeed ZeRO, whose bf16 mode keeps float32 "
            "master weights")
