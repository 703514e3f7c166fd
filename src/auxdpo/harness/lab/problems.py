"""Preference problems of the exact lab: (ρ, r*, pair counts n(s, a, a'), β).

The population loss of every method sums, over the pairs with n > 0, the per-pair loss with
soft label p = σ(r*(s,a) − r*(s,a')) and weight n(s,a,a') (paper Eq. 3 and 7). Since the soft
loss of (a, a') with label p equals that of (a', a) with label 1 − p, the ordered counts are
folded into unordered pairs a < a' with weight n(s,a,a') + n(s,a',a). Diagonal entries
n(s, a, a) compare a response with itself, carry no information and are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from auxdpo.harness.lab.policies import DTYPE, LogLinearPolicy

__all__ = [
    "PairTable",
    "PreferenceProblem",
    "prop2_problem",
    "random_loglinear_instance",
]


class PairTable(NamedTuple):
    """The unordered pairs a < a' with positive weight, all ``(P,)``."""

    state: torch.Tensor       # long
    first: torch.Tensor       # long, action a
    second: torch.Tensor      # long, action a' > a
    weight: torch.Tensor      # n(s,a,a') + n(s,a',a)
    pref_prob: torch.Tensor   # σ(r*(s,a) − r*(s,a')): probability that a ≻ a'


def _finite(name: str, t: torch.Tensor) -> None:
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")


@dataclass
class PreferenceProblem:
    """A population preference problem over S states and A actions."""

    rho: torch.Tensor = field(metadata={"help": "prompt distribution ρ(s), (S,), > 0, sums to 1"})
    reward: torch.Tensor = field(metadata={"help": "latent reward r*(s, a), (S, A)"})
    counts: torch.Tensor = field(metadata={"help": "pair counts n(s, a, a') >= 0, (S, A, A)"})
    beta: float = field(default=1.0, metadata={"help": "KL strength β > 0"})

    def __post_init__(self):
        self.rho = torch.as_tensor(self.rho, dtype=DTYPE)
        self.reward = torch.as_tensor(self.reward, dtype=DTYPE)
        self.counts = torch.as_tensor(self.counts, dtype=DTYPE)
        beta = float(self.beta)
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a positive finite number, got {self.beta!r}")
        self.beta = beta
        for name in ("rho", "reward", "counts"):
            _finite(name, getattr(self, name))
        if self.rho.ndim != 1 or self.rho.numel() < 1:
            raise ValueError(f"rho must have shape (S,), got {tuple(self.rho.shape)}")
        if torch.any(self.rho <= 0) or abs(self.rho.sum().item() - 1.0) > 1e-9:
            raise ValueError("rho must be positive and sum to 1")
        S = self.rho.shape[0]
        if self.reward.ndim != 2 or self.reward.shape[0] != S or self.reward.shape[1] < 2:
            raise ValueError(f"reward must have shape (S, A) = ({S}, A >= 2), got "
                             f"{tuple(self.reward.shape)}")
        A = self.reward.shape[1]
        if self.counts.shape != (S, A, A):
            raise ValueError(f"counts must have shape (S, A, A) = ({S}, {A}, {A}), got "
                             f"{tuple(self.counts.shape)}")
        if torch.any(self.counts < 0):
            raise ValueError("counts must be non-negative")
        if self.pair_table().weight.numel() == 0:
            raise ValueError("counts must contain at least one pair of distinct actions")

    @property
    def num_states(self) -> int:
        return int(self.rho.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.reward.shape[1])

    def pair_table(self) -> PairTable:
        """Unordered pairs with positive folded weight (see the module docstring)."""
        A = self.num_actions
        folded = self.counts + self.counts.transpose(1, 2)
        upper = torch.triu(torch.ones(A, A, dtype=torch.bool), diagonal=1)
        s, a, b = torch.nonzero(upper[None] & (folded > 0), as_tuple=True)
        gap = self.reward[s, a] - self.reward[s, b]
        return PairTable(s, a, b, folded[s, a, b], torch.sigmoid(gap))  # BTL label, Sec. 2

    def check_policy(self, policy) -> None:
        """Raise ValueError when ``policy`` does not live on this problem's S × A."""
        if (policy.num_states, policy.num_actions) != (self.num_states, self.num_actions):
            raise ValueError(
                f"policy is defined on S×A = {policy.num_states}×{policy.num_actions}, the "
                f"problem on {self.num_states}×{self.num_actions}")


PROP2_REWARD = (1.0, 2.0, 0.0)


def prop2_problem(beta: float, counts=(1.0, 1.0, 1.0)) -> PreferenceProblem:
    """The paper's Proposition 2 instance: one state, r* = [1, 2, 0].

    ``counts`` = (n12, n23, n31): pairs (a1, a2), (a2, a3) and (a3, a1). Use it with
    :func:`auxdpo.harness.lab.policies.three_response_policy` (θ₀ = 0, uniform base policy).
    """
    values = [float(c) for c in counts]
    if len(values) != 3:
        raise ValueError(f"counts must be three numbers n12,n23,n31, got {len(values)}")
    if any(not math.isfinite(c) or c < 0 for c in values):
        raise ValueError(f"counts must be finite and non-negative, got {values}")
    n = torch.zeros(1, 3, 3, dtype=DTYPE)
    n[0, 0, 1], n[0, 1, 2], n[0, 2, 0] = values
    return PreferenceProblem(torch.ones(1, dtype=DTYPE), torch.tensor([PROP2_REWARD],
                             dtype=DTYPE), n, beta)


def random_loglinear_instance(seed: int, *, beta: float, skew: float, num_states: int = 10,
                              num_actions: int = 20, dim: int = 4, theta0_scale: float = 0.5,
                              reward_scale: float = 1.0
                              ) -> tuple[LogLinearPolicy, PreferenceProblem]:
    """A random log-linear instance (the ``lab loglinear`` family).

    Features φ(s,a) ~ N(0, I_d); θ₀ ~ N(0, theta0_scale²·I_d) (base logits of std ≈
    theta0_scale·√d); r*(s,a) ~ N(0, reward_scale²); ρ ~ Dirichlet(2, …, 2). Counts
    n(s,a,a') ∝ ρ(s)π₀(a|s)π₀(a'|s)·exp(skew·z), z symmetric N(0, 1), zero diagonal, scaled
    to sum to 1 (scaling never moves a minimiser; it keeps losses O(1)).
    """
    if num_states < 1 or num_actions < 2 or dim < 1:
        raise ValueError(f"need states >= 1, actions >= 2, dim >= 1; got {num_states}, "
                         f"{num_actions}, {dim}")
    if not (math.isfinite(skew) and skew >= 0):
        raise ValueError(f"skew must be a finite number >= 0, got {skew!r}")
    gen = torch.Generator().manual_seed(int(seed))
    normal = lambda *shape: torch.randn(*shape, generator=gen, dtype=DTYPE)  # noqa: E731
    features = normal(num_states, num_actions, dim)
    policy = LogLinearPolicy(features, theta0_scale * normal(dim))
    reward = reward_scale * normal(num_states, num_actions)
    uniforms = torch.rand(num_states, 2, generator=gen, dtype=DTYPE)
    gamma2 = -torch.log1p(-uniforms).sum(dim=1)   # Gamma(2, 1) as a sum of two Exp(1)
    rho = gamma2 / gamma2.sum()                   # Dirichlet(2, ..., 2)
    pi0 = policy.probs(policy.theta0)
    z = normal(num_states, num_actions, num_actions)
    z = torch.triu(z, diagonal=1) + torch.triu(z, diagonal=1).transpose(1, 2)
    counts = rho[:, None, None] * pi0[:, :, None] * pi0[:, None, :] * torch.exp(skew * z)
    counts = counts * (1 - torch.eye(num_actions, dtype=DTYPE))
    return policy, PreferenceProblem(rho, reward, counts / counts.sum(), beta)
