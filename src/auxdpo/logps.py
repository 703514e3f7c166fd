"""Token logits → sequence log-probs of preference responses.

A response's log-prob is log π(a|s) = Σ_t log π(y_t | s, y_<t) over its completion tokens
(``average=False``, DPO/DPOP/AuxDPO), or the mean over them (``average=True``, IPO's
convention as agreed between TRL and the IPO authors). This is an explicit, visible choice.

Batches follow TRL 1.16's ``DataCollatorForPreference``: ``input_ids``, ``attention_mask`` and
``completion_mask``, each ``(2B, T)``, right-padded; rows ``0..B-1`` are prompt+chosen and rows
``B..2B-1`` prompt+rejected. Token ``t`` is predicted by the logits at position ``t-1``, so
the mask that selects scored positions is ``completion_mask[:, 1:]`` — the same shift TRL uses.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["MODEL_INPUT_KEYS", "model_sequence_logps", "sequence_logps"]

# Keys of a collated batch that are passed on to the model's forward; everything else
# (completion_mask, aux_index, precomputed reference log-probs, ...) stays out.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids", "token_type_ids")


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor,
                   *, average: bool = False) -> torch.Tensor:
    """Sum (or mean) of next-token log-probs over each row's completion tokens.

    Args:
        logits: ``(N, T, V)`` model outputs; ``logits[:, t]`` scores token ``t+1``.
        input_ids: ``(N, T)`` token ids.
        completion_mask: ``(N, T)``, 1 on completion tokens, 0 on prompt and padding.
        average: mean over completion tokens instead of sum (IPO).

    Returns:
        ``(N,)`` log π(a|s) per row, in the logits' dtype (a row without completion tokens
        gets 0; with ``average`` its count is clamped to 1).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, T, V), got shape {tuple(logits.shape)}")
    if input_ids.shape != logits.shape[:2] or completion_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and completion_mask "
            f"{tuple(completion_mask.shape)} must both be (N, T) = {tuple(logits.shape[:2])}")
    scored_logits = logits[:, :-1]
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logits.dtype)
    # log softmax at the target only: logit[target] − logsumexp(logits), without (N,T,V) logs.
    target_logits = torch.gather(scored_logits, 2, targets.unsqueeze(-1)).squeeze(-1)
    token_logps = target_logits - torch.logsumexp(scored_logits, dim=-1)
    total = (token_logps * mask).sum(dim=1)
    if average:
        return total / mask.sum(dim=1).clamp(min=1)
    return total


def model_sequence_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *,
                         average: bool = False,
                         params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Run a causal LM on a collated preference batch and return ``(2B,)`` sequence log-probs.

    Args:
        model: a Hugging Face causal LM (anything returning ``.logits`` of shape ``(N, T, V)``).
        batch: ``input_ids``, ``attention_mask``, ``completion_mask`` ``(N, T)`` (+ optional
            ``position_ids``/``token_type_ids``); other keys are ignored.
        average: mean over completion tokens instead of sum.
        params: optional ``{name: tensor}`` overriding some of the model's parameters and
            buffers for this call (``torch.func.functional_call``); the model is not modified.

    Returns:
        ``(N,)`` log-probs in the batch's row order (chosen rows first, then rejected).
    """
    for key in ("input_ids", "completion_mask"):
        if key not in batch:
            raise ValueError(f"batch is missing {key!r} (expected TRL's preference collator "
                             "format: input_ids, attention_mask, completion_mask)")
    kwargs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    kwargs["use_cache"] = False
    if params is None:
        outputs = model(**kwargs)
    else:
        outputs = torch.func.functional_call(model, dict(params), args=(), kwargs=kwargs,
                                             strict=False)
    logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
    return sequence_logps(logits, batch["input_ids"], batch["completion_mask"], average=average)
