"""What the comparisons alone say about AuxDPO's offsets: pairs per response, responses that
won or lost every comparison (hard labels separate them: their offsets are held only by the
prior), and how connected each prompt's comparison graph is."""

from __future__ import annotations

import torch

from auxdpo.diagnose.local import Comparisons, components

__all__ = ["data_report"]


def data_report(comparisons: Comparisons) -> dict[str, float]:
    """``pairs``, ``prompts``, ``unique_responses``, ``pairs_per_response`` (the mean number of
    pairs a response is in, as the trainer's ``aux/pairs_per_response``), ``shared_share`` (share of
    responses in two or more pairs), ``separable_share`` (share of responses that won every
    comparison or lost every one, labels read as p > 1/2) and ``components_per_prompt`` (the
    comparison graph's connected components per prompt; 1: each prompt's responses are linked,
    so their rewards are identified up to one constant)."""
    k, m = comparisons.num_responses, comparisons.first.numel()
    sides = comparisons.sides()
    wins = comparisons.pref > 0.5
    losses = comparisons.pref < 0.5
    won = torch.zeros(k, dtype=torch.long)
    lost = torch.zeros(k, dtype=torch.long)
    won.index_add_(0, comparisons.first[wins], torch.ones(int(wins.sum()), dtype=torch.long))
    won.index_add_(0, comparisons.second[losses],
                   torch.ones(int(losses.sum()), dtype=torch.long))
    lost.index_add_(0, comparisons.second[wins], torch.ones(int(wins.sum()), dtype=torch.long))
    lost.index_add_(0, comparisons.first[losses],
                    torch.ones(int(losses.sum()), dtype=torch.long))
    decided = won + lost
    separable = (decided > 0) & ((won == decided) | (lost == decided))
    prompts = len(set(comparisons.prompt.tolist()))
    # Pairs compare responses of one prompt, so components never cross prompts.
    return {"pairs": m, "prompts": prompts,
            "unique_responses": k,
            "pairs_per_response": float(sides.mean()) if k else 0.0,
            "shared_share": float((sides >= 2).to(torch.float64).mean()) if k else 0.0,
            "separable_share": float(separable.to(torch.float64).mean()) if k else 0.0,
            "components_per_prompt": (int(components(comparisons).unique().numel()) / prompts
                                      if prompts else 0.0)}
