"""The finite-sample regime's options and its data: n labelled pairs drawn from a design.

:class:`FiniteConfig` is ``OracleConfig.finite``. A :class:`PairSample` holds n labelled pairs
(prompt, winner, loser): :func:`sample_pairs` draws them i.i.d. from a design's pair
distribution with BTL(r*) labels, :func:`sample_groups` draws prompts with k responses each and
labels every pair, and :func:`enumerate_draws` lists every outcome of one draw with its
probability (for exact expectations). Both finite solvers, the trainer
(:mod:`auxdpo.oracle.finite`) and the full-batch minimisers (:mod:`auxdpo.oracle.fullbatch`),
train on these samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["FINITE_AUX_MODES", "FINITE_SOLVERS", "NULL_WEIGHTS", "OFFSET_KEYS", "SAMPLERS",
           "FiniteConfig", "PairSample", "enumerate_draws", "sample_groups", "sample_pairs"]

DTYPE = torch.float64
SAMPLERS = ("design", "policy")
FINITE_AUX_MODES = ("projection", "global", "batch")
FINITE_SOLVERS = ("trainer", "full-batch")
OFFSET_KEYS = ("response", "row")
NULL_WEIGHTS = ("multiplicity", "reference", "prompt")


@dataclass
class FiniteConfig:
    """Options of the finite-sample regime (``OracleConfig.finite``)."""

    pairs: int | list[int] = field(default=1000, metadata={
        "help": "n, sampled preference pairs per seed (full-batch: a list is an n-sweep)"})
    solver: str = field(default="trainer", metadata={
        "help": "trainer: each method trained by AuxDPOTrainer; full-batch: the exact "
                "minimiser of each empirical loss (auxdpo.oracle.fullbatch)"})
    aux_offsets: list[str] = field(default_factory=lambda: ["response"], metadata={
        "help": "AuxDPO's offset keys: response (one δ per prompt-response) and/or row "
                "(one per pair side)"})
    null_weights: list[str] = field(default_factory=lambda: ["multiplicity"], metadata={
        "help": "weights ω of AuxDPO's empirical constraint: multiplicity, reference, prompt"})
    responses_per_prompt: int = field(default=0, metadata={
        "help": "k > 0: prompts s ~ ρ with k responses each from the behaviour policy, "
                "every pair labelled; 0: i.i.d. pairs"})
    sampler: str = field(default="design", metadata={
        "help": "design: pairs from the design's counts; policy: s ~ ρ, a ≠ a' ~ π₀(·|s)"})
    epochs: float = field(default=20.0, metadata={
        "help": "trainer epochs (row-keyed δ acts from the second epoch on)"})
    lr: float = field(default=1e-2, metadata={"help": "trainer learning rate (AdamW)"})
    batch_size: int = field(default=100, metadata={"help": "trainer per-device batch size"})
    scheduler: str = field(default="linear", metadata={
        "help": "trainer learning-rate schedule (transformers' lr_scheduler_type)"})
    delta_lr: float = field(default=0.1, metadata={"help": "AuxDPO's δ learning rate"})
    lambda_amp: float = field(default=0.0, metadata={
        "help": "AuxDPO batch mode's amplitude term λ_amp‖δ_B‖² (paper Sec. 7.2; 0: off)"})
    rm_steps: int = field(default=200, metadata={
        "help": "reward model: full-batch Adam steps (0: no rlhf_2stage row)"})
    rm_lr: float = field(default=3e-3, metadata={"help": "reward model: Adam learning rate"})
    rm_val_fraction: float = field(default=0.1, metadata={
        "help": "reward model: share of pairs held out for early stopping"})

    def __post_init__(self):
        counts = self.pair_counts
        if (not counts or any(not isinstance(n, int) or n < 2 for n in counts)
                or self.batch_size < 1 or self.rm_steps < 0):
            raise ValueError("finite: need pairs >= 2, batch_size >= 1 and rm_steps >= 0")
        if self.solver not in FINITE_SOLVERS:
            raise ValueError(f"finite: solver must be one of {FINITE_SOLVERS}, "
                             f"got {self.solver!r}")
        if self.solver == "trainer" and len(counts) > 1:
            raise ValueError("finite: several pair counts need solver full-batch (the "
                             "trainer runs one n at a time)")
        for name, allowed in (("aux_offsets", OFFSET_KEYS), ("null_weights", NULL_WEIGHTS)):
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values) or len(set(values)) < len(
                    values):
                raise ValueError(f"finite: {name} must be distinct values of {allowed}, "
                                 f"got {values!r}")
        if self.responses_per_prompt < 0 or self.responses_per_prompt == 1:
            raise ValueError("finite: responses_per_prompt must be 0 (i.i.d. pairs) or >= 2, "
                             f"got {self.responses_per_prompt!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"finite: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.lambda_amp < 0:
            raise ValueError(f"finite: lambda_amp must be >= 0, got {self.lambda_amp!r}")
        for name in ("epochs", "lr", "delta_lr", "rm_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"finite: {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.rm_val_fraction < 1:
            raise ValueError(f"finite: rm_val_fraction must lie in [0, 1), "
                             f"got {self.rm_val_fraction!r}")

    @property
    def pair_counts(self) -> list[int]:
        """The n of each sweep point (one for the trainer)."""
        return [self.pairs] if isinstance(self.pairs, int) else list(self.pairs)


@dataclass
class PairSample:
    """n labelled pairs: prompt index, winner and loser response indices, each ``(n,)`` long."""

    state: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor

    def __len__(self) -> int:
        return int(self.state.numel())


def sample_pairs(counts: torch.Tensor, reward: torch.Tensor, n: int,
                 generator: torch.Generator) -> PairSample:
    """n i.i.d. pairs (s, a, a') ∝ ``counts`` ``(S, A, A)``, labels from BTL(``reward``)."""
    S, A, _ = counts.shape
    flat = torch.multinomial(counts.reshape(-1), n, replacement=True, generator=generator)
    state, first, second = flat // (A * A), (flat // A) % A, flat % A
    p_first = torch.sigmoid(reward[state, first] - reward[state, second])  # BTL(r*)
    first_wins = torch.rand(n, generator=generator, dtype=DTYPE) < p_first
    return PairSample(state, torch.where(first_wins, first, second),
                      torch.where(first_wins, second, first))


def enumerate_draws(counts: torch.Tensor, reward: torch.Tensor
                    ) -> tuple[torch.Tensor, PairSample]:
    """Every outcome (s, winner, loser) of one draw of :func:`sample_pairs`, each once, and
    its probability ``(K,)``: (n(s, w, l) + n(s, l, w))·σ(r*(s, w) − r*(s, l)) / Σn."""
    either = counts + counts.transpose(1, 2)                 # the unordered pair is drawn
    s, w, l = torch.nonzero(either > 0, as_tuple=True)
    prob = either[s, w, l] * torch.sigmoid(reward[s, w] - reward[s, l])   # BTL(r*)
    return prob / counts.sum(), PairSample(s, w, l)


def sample_groups(rho: torch.Tensor, behaviour: torch.Tensor, reward: torch.Tensor, n: int,
                  k: int, generator: torch.Generator) -> PairSample:
    """The shape of multi-completion data: prompts s ~ ρ, k responses i.i.d. from
    ``behaviour`` ``(S, A)`` (probabilities), every pair of distinct responses labelled by
    BTL(``reward``); groups are drawn until n pairs exist, and the first n are kept."""
    if k < 2:
        raise ValueError(f"responses per prompt must be >= 2, got {k}")
    first, second = torch.triu_indices(k, k, offset=1)
    states, chosen, rejected, total = [], [], [], 0
    while total < n:
        groups = max(1, math.ceil((n - total) / first.numel() * 1.2))
        s = torch.multinomial(rho, groups, replacement=True, generator=generator)
        a = torch.multinomial(behaviour[s], k, replacement=True, generator=generator)
        x, y = a[:, first].reshape(-1), a[:, second].reshape(-1)
        s = s[:, None].expand(-1, first.numel()).reshape(-1)
        keep = x != y                                            # a response is not a pair
        s, x, y = s[keep], x[keep], y[keep]
        p_x = torch.sigmoid(reward[s, x] - reward[s, y])         # BTL(r*)
        x_wins = torch.rand(s.numel(), generator=generator, dtype=DTYPE) < p_x
        states.append(s)
        chosen.append(torch.where(x_wins, x, y))
        rejected.append(torch.where(x_wins, y, x))
        total += s.numel()
    return PairSample(torch.cat(states)[:n], torch.cat(chosen)[:n], torch.cat(rejected)[:n])
