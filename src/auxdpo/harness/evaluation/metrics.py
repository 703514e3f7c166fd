"""Pairwise accuracy (the paper's Table 1), as pure functions of scores (no model calls).

Share of pairs whose chosen response has the higher policy log-prob, and the same with implicit
rewards β·log π/π_ref (both reported, labeled). :func:`as_vector` is the input rule every
metric of :mod:`auxdpo.harness.evaluation` shares: scores may be lists, numpy arrays or torch tensors
(moved to CPU as float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pairwise_accuracy", "implicit_reward_accuracy", "pairwise_metrics"]


def as_vector(values: Any, name: str) -> np.ndarray:
    """``values`` (list, numpy array or torch tensor) as a (B,) float64 array."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().to("cpu").double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (B,), got shape {array.shape}")
    return array


def same_length(**arrays: np.ndarray) -> int:
    """The common, non-zero length of ``arrays`` (ValueError otherwise)."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"lengths differ: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("no pairs to score")
    return n


def pairwise_accuracy(chosen_scores: Any, rejected_scores: Any) -> float:
    """Share of pairs with ``chosen > rejected`` (strict: a tie counts as wrong). Inputs (B,)."""
    chosen = as_vector(chosen_scores, "chosen_scores")
    rejected = as_vector(rejected_scores, "rejected_scores")
    same_length(chosen=chosen, rejected=rejected)
    return float(np.mean(chosen > rejected))


def implicit_reward_accuracy(policy_chosen_logps: Any, policy_rejected_logps: Any,
                             ref_chosen_logps: Any, ref_rejected_logps: Any, *,
                             beta: float) -> float:
    """Share of pairs whose implicit reward β·(log π − log π_ref) favours chosen (Eq. 3's r_θ).

    All inputs (B,). With β > 0 this ranks by the log-ratio, not by the policy's log-prob:
    the two accuracies differ whenever the reference already prefers one response.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen_reward = beta * (as_vector(policy_chosen_logps, "policy_chosen_logps")
                            - as_vector(ref_chosen_logps, "ref_chosen_logps"))
    rejected_reward = beta * (as_vector(policy_rejected_logps, "policy_rejected_logps")
                              - as_vector(ref_rejected_logps, "ref_rejected_logps"))
    return pairwise_accuracy(chosen_reward, rejected_reward)


def pairwise_metrics(policy_chosen_logps: Any, policy_rejected_logps: Any,
                     ref_chosen_logps: Any, ref_rejected_logps: Any, *,
                     beta: float) -> dict[str, float]:
    """All pairwise accuracies, labeled: ``{"n_pairs", "logp_accuracy",
    "implicit_reward_accuracy", "reference_logp_accuracy"}`` (the last is the base model's)."""
    return {
        "n_pairs": int(same_length(a=as_vector(policy_chosen_logps, "policy_chosen_logps"),
                                   b=as_vector(ref_rejected_logps, "ref_rejected_logps"))),
        "logp_accuracy": pairwise_accuracy(policy_chosen_logps, policy_rejected_logps),
        "implicit_reward_accuracy": implicit_reward_accuracy(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            beta=beta),
        "reference_logp_accuracy": pairwise_accuracy(ref_chosen_logps, ref_rejected_logps),
    }
