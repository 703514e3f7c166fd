"""A Gaussian prior on AuxDPO's offsets (docs/finite_sample.md, "The prior on the offsets").

With the prior the offsets solve the MAP objective

    L(θ, δ) = (1/n) Σ_i ℓ_i(θ, δ) + (τ/2n) Σ_k δ_k²,        τ = 1/σ²,

k over the K slots (the offsets that occur in the data), σ (``delta_scale``) the prior
standard deviation of an offset in reward units (δ enters the loss as
−log σ(β·h + δ_w − δ_l)), under the mode's constraint as before. λ = τ/n: the prior washes out
as the data grow. Without it, hard labels on responses seen in few pairs separate and δ runs
off to infinity along them.

**Exact per-row shares.** With c_k the occurrences of slot k in the data,

    (τ/2n) Σ_k δ_k² = (1/n) Σ_i (τ/2)·(δ_w(i)²/c_w(i) + δ_l(i)²/c_l(i)),

so each row carries its share, as it carries its loss ℓ_i.

**Count-dependent variance** (``delta_half_count`` c½): slot k's prior variance is
σ²·c_k/(c_k + c½), i.e. its precision τ_k = τ·(1 + c½/c_k): an offset whose response occurs in
few pair sides is held closer to 0 (where hard labels separate most easily), one seen in many
is held by τ alone. Everything above holds with τ_k in place of τ. A step on G rows adds
(1/G)·τ·δ_k/c_k to slot k for every occurrence of k among its rows: the scale (1/G) of the mean
loss, i.e. (n/G) times the row's part of the full gradient. One pass over the data meets slot
k c_k times and adds (1/G)·τ·δ_k = (n/G)·∂/∂δ_k (τ/2n)Σδ², and uniformly drawn batches
estimate the full gradient without bias (tests/offsets/test_offsets_prior.py checks an
epoch's sum against autograd of the full objective).

:class:`OffsetPrior`, held by :class:`auxdpo.offsets.AuxOffsets`, gives the gradient (added to δ's
penalty gradient, so a ``delta_cap``'s chain rule, projection's Γᵀ and the processes' sum
apply to it as to the penalty), the full value (``aux/prior``) and the shares of given rows
(the notebook preset's δ = β·δ′ adds them to its loss, :mod:`auxdpo.train.notebook`).
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["OffsetPrior", "prior_precision", "prior_value", "slot_precision"]


def prior_precision(delta_scale: float | None) -> float:
    """τ = 1/σ² of ``delta_scale`` σ; 0.0 for None (no prior). ValueError unless σ is a finite
    number > 0 or None."""
    if delta_scale is None:
        return 0.0
    if isinstance(delta_scale, bool) or not isinstance(delta_scale, (int, float)) \
            or not math.isfinite(delta_scale) or delta_scale <= 0:
        raise ValueError(f"delta_scale (the prior's σ) must be a finite number > 0 or None, "
                         f"got {delta_scale!r}")
    return 1.0 / float(delta_scale) ** 2


def slot_precision(precision: float, counts: torch.Tensor,
                   half_count: float | None) -> torch.Tensor | float:
    """τ_k of every slot: τ·(1 + c½/c_k) ``(K,)`` with ``half_count`` c½, else τ itself.
    ValueError unless c½ is a finite number > 0 or None."""
    if half_count is None:
        return precision
    if isinstance(half_count, bool) or not isinstance(half_count, (int, float)) \
            or not math.isfinite(half_count) or half_count <= 0:
        raise ValueError(f"delta_half_count (c½) must be a finite number > 0 or None, "
                         f"got {half_count!r}")
    return precision * (1 + float(half_count) / counts.clamp_min(1))


def prior_value(values: torch.Tensor, precision: float | torch.Tensor,
                num_examples: int) -> float:
    """(1/2n) Σ_k τ_k δ_k² of the K offsets ``values`` (reward units); ``precision`` τ or τ_k
    ``(K,)``."""
    squares = values.detach().double().pow(2)
    if isinstance(precision, torch.Tensor):
        squares = squares * precision.to(squares)
        precision = 1.0
    return precision * float(squares.sum()) / (2 * num_examples)


class OffsetPrior:
    """The prior (τ/2n)Σ_k τ_k/τ·δ_k² on the offsets of one :class:`auxdpo.offsets.AuxOffsets`:
    its gradient, full value and row shares.

    Args:
        delta_scale: σ (None: no prior, τ = 0).
        half_count: c½ of the count-dependent variance (None: τ_k = τ).
        counts: c ``(K,)``, every slot's occurrences in the data (δ's dtype and device).
        slots: the ``(n, 2)`` slot map.
    """

    def __init__(self, delta_scale: float | None, half_count: float | None,
                 counts: torch.Tensor, slots: torch.Tensor) -> None:
        self.delta_scale, self.half_count = delta_scale, half_count
        self.precision = prior_precision(delta_scale)                          # τ
        self.slot_tau = slot_precision(self.precision, counts, half_count)      # τ or τ_k
        self.counts, self.slots = counts, slots
        self.num_examples = slots.shape[0]

    def state_dict(self) -> dict:
        return {"delta_scale": self.delta_scale, "delta_half_count": self.half_count}

    def load_state_dict(self, state: dict) -> None:
        """Warns when the checkpoint's σ or c½ differ from this prior's (the objective
        changes at the resumed step); this prior stays."""
        for key, name, value in (("delta_scale", "σ", self.delta_scale),
                                 ("delta_half_count", "c½", self.half_count)):
            if key in state and state[key] != value:
                warnings.warn(f"resuming offsets trained with the prior's {name} = "
                              f"{state[key]} ({key}) under {name} = {value}: "
                              "the objective changes at this step", RuntimeWarning,
                              stacklevel=3)

    @property
    def active(self) -> bool:
        """Whether there is a prior (τ > 0)."""
        return bool(self.precision)

    def _tau(self, slots: torch.Tensor) -> float | torch.Tensor:
        tau = self.slot_tau
        return tau[slots] if isinstance(tau, torch.Tensor) else tau

    def total(self, values: torch.Tensor) -> float:
        """The prior's full value (1/2n)Σ_k τ_k δ_k² at offsets ``values`` ``(K,)``."""
        return prior_value(values, self.slot_tau, self.num_examples)

    def shares(self, index: torch.Tensor, chosen: torch.Tensor,
               rejected: torch.Tensor) -> torch.Tensor:
        """``(B,)`` each row's share (τ/2)·(δ_w²/c_w + δ_l²/c_l) of the prior, for dataset rows
        ``index`` ``(B,)`` (checked by the caller) and their offsets ``chosen``, ``rejected``
        in reward units (differentiable in them). The mean over a batch estimates the
        prior's value without bias."""
        slots = self.slots[index]                                               # (B, 2)
        weight = (self._tau(slots) / self.counts[slots]).to(chosen.dtype)       # τ_k/c_k
        return 0.5 * (weight[:, 0] * chosen.pow(2) + weight[:, 1] * rejected.pow(2))

    def add_grad(self, delta: torch.Tensor, occurrences: list[torch.Tensor],
                 global_batch_size: int, grad: torch.Tensor) -> float:
        """Adds (1/G)·τ_k·δ_k/c_k to ``grad`` (K,) for every occurrence of slot k in the
        step's micro-batches (this process's; the caller sums processes); returns the full
        value (1/2n)Στ_kδ_k² at ``delta``, before the step."""
        for slots in occurrences:
            grad.index_add_(0, slots, self._tau(slots) * delta[slots]
                            / (self.counts[slots] * global_batch_size))
        return self.total(delta)
