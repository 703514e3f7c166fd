"""The finite-sample regime's options and its data: n labelled pairs drawn from a design.

:class:`FiniteConfig` is ``OracleConfig.finite``. A :class:`PairSample` holds n labelled pairs
(prompt, winner, loser): :func:`sample_pairs` draws them i.i.d. from a design's pair
distribution with BTL(r*) labels, :func:`sample_groups` draws prompts with k responses each and
labels every pair, and :func:`enumerate_draws` lists every outcome of one draw with its
probability (for exact expectations). Both finite solvers, the trainer
(:mod:`auxdpo.harness.oracle.finite`) and the full-batch minimisers (:mod:`auxdpo.harness.oracle.fullbatch`),
train on these samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# The trainer's defaults (AuxDPOConfig), so that a plain `auxdpo oracle` measures what users get.
from auxdpo.train.aux_defaults import (
    DEFAULT_DELTA_HALF_COUNT,
    DEFAULT_DELTA_SCALE,
    DEFAULT_NULL_WEIGHTS,
)

__all__ = ["DEFAULT_DELTA_HALF_COUNT", "DEFAULT_DELTA_SCALE", "DEFAULT_NULL_WEIGHTS",
           "FINITE_AUX_MODES", "FINITE_SOLVERS",
           "LABELS", "NULL_WEIGHTS", "OFFSET_KEYS", "SAMPLERS", "FiniteConfig", "PairSample",
           "enumerate_draws", "rating_labels", "sample_groups", "sample_pairs"]

DTYPE = torch.float64
SAMPLERS = ("design", "policy", "disagreeing")
LABELS = ("hard", "soft")
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
                "minimiser of each empirical loss (auxdpo.harness.oracle.fullbatch)"})
    aux_offsets: list[str] = field(default_factory=lambda: ["response"], metadata={
        "help": "AuxDPO's offset keys: response (one δ per prompt-response) and/or row "
                "(one per pair side)"})
    null_weights: list[str] = field(default_factory=lambda: [DEFAULT_NULL_WEIGHTS], metadata={
        "help": "weights ω of AuxDPO's empirical constraint: multiplicity, reference, prompt"})
    delta_scales: list[float | str | None] = field(
        default_factory=lambda: [DEFAULT_DELTA_SCALE], metadata={
            "help": "σ of AuxDPO's Gaussian prior on each offset (the trainer's "
                    "aux_delta_scale; None: no prior; 'em': estimated from the data, "
                    "full-batch only)"})
    delta_half_counts: list[float | None] = field(
        default_factory=lambda: [DEFAULT_DELTA_HALF_COUNT], metadata={
        "help": "c½ of a count-dependent prior: a response in c comparisons gets variance "
                "σ²·c/(c + c½) (None: σ² for every response)"})
    labels: str = field(default="hard", metadata={
        "help": "hard: BTL(r*) draws; soft: each response of a pair gets a rating r* + "
                "N(0, label_noise²), chosen is the higher one, p = σ(Δrating/T)"})
    label_noise: float = field(default=0.5, metadata={
        "help": "soft labels: standard deviation of a rating's noise"})
    label_temperature: float = field(default=1.0, metadata={
        "help": "soft labels: T in p = σ(Δrating/T)"})
    responses_per_prompt: int = field(default=0, metadata={
        "help": "k > 0: prompts s ~ ρ with k responses each from the behaviour policy, "
                "every pair labelled; 0: i.i.d. pairs"})
    sampler: str = field(default="design", metadata={
        "help": "design: pairs from the design's counts (groups: its response marginal); "
                "policy: s ~ ρ, a ≠ a' ~ π₀(·|s); disagreeing (groups only): π₀ groups kept "
                "with probability K^(m−M), m of their M pairs with r* order against the "
                "local RLHF direction, K = group_factor"})
    group_factor: float = field(default=10.0, metadata={
        "help": "sampler disagreeing: weight K of each disagreeing pair in a group"})
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
        if not self.group_factor >= 1:
            raise ValueError(f"finite: group_factor must be >= 1, got {self.group_factor!r}")
        if self.sampler == "disagreeing" and not self.responses_per_prompt:
            raise ValueError("finite: sampler disagreeing draws groups: set "
                             "responses_per_prompt >= 2 (i.i.d. pairs: design anti-aligned)")
        if self.solver == "trainer" and (self.responses_per_prompt or self.labels != "hard"
                                         or self.sampler == "disagreeing"):
            raise ValueError("finite: the trainer solver draws i.i.d. pairs with hard labels; "
                             "groups, soft labels and disagreeing groups need solver "
                             "full-batch")
        if self.labels not in LABELS:
            raise ValueError(f"finite: labels must be one of {LABELS}, got {self.labels!r}")
        if not self.delta_scales or len(set(self.delta_scales)) < len(self.delta_scales) or any(
                s is not None and s != "em" and not (isinstance(s, (int, float))
                                                     and math.isfinite(s) and s > 0)
                for s in self.delta_scales):
            raise ValueError("finite: delta_scales must be distinct values > 0, None or 'em' "
                             f"(full-batch: estimated), got {self.delta_scales!r}")
        if "em" in self.delta_scales and (self.solver != "full-batch"
                                          or self.aux_offsets != ["response"]):
            raise ValueError("finite: delta_scales 'em' needs solver full-batch and "
                             "aux_offsets response")
        if any(h is not None and not h > 0 for h in self.delta_half_counts):
            raise ValueError(f"finite: delta_half_counts must be > 0 or None, got "
                             f"{self.delta_half_counts!r}")
        if self.lambda_amp < 0:
            raise ValueError(f"finite: lambda_amp must be >= 0, got {self.lambda_amp!r}")
        for name in ("epochs", "lr", "delta_lr", "rm_lr", "label_noise", "label_temperature"):
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
    """n labelled pairs: prompt index, winner and loser response indices, each ``(n,)`` long;
    ``pref`` ``(n,)`` the probability that the winner is preferred (soft labels; None: 1)."""

    state: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    pref: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.state.numel())


def sample_pairs(counts: torch.Tensor, reward: torch.Tensor, n: int,
                 generator: torch.Generator, soft: tuple[float, float] | None = None
                 ) -> PairSample:
    """n i.i.d. pairs (s, a, a') ∝ ``counts`` ``(S, A, A)``, labels from BTL(``reward``), or
    with ``soft`` = (noise, T) from one noisy rating per pair side (:func:`rating_labels`)."""
    S, A, _ = counts.shape
    flat = torch.multinomial(counts.reshape(-1), n, replacement=True, generator=generator)
    state, first, second = flat // (A * A), (flat // A) % A, flat % A
    if soft is not None:
        return rating_labels(state, first, second, reward[state, first],
                             reward[state, second], soft, generator)
    p_first = torch.sigmoid(reward[state, first] - reward[state, second])  # BTL(r*)
    first_wins = torch.rand(n, generator=generator, dtype=DTYPE) < p_first
    return PairSample(state, torch.where(first_wins, first, second),
                      torch.where(first_wins, second, first))


def rating_labels(state: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                  reward_first: torch.Tensor, reward_second: torch.Tensor,
                  soft: tuple[float, float], generator: torch.Generator) -> PairSample:
    """Soft labels from ratings, as rating-based data sets give them: each side's rating is
    its reward plus N(0, noise²) (``soft`` = (noise, T); the ``reward_*`` of a group's member
    may already carry its one rating's noise, pass noise 0 then); the higher-rated side is
    chosen, with probability p = σ(|Δrating|/T) that it is preferred."""
    noise, temperature = soft
    gap = reward_first - reward_second
    if noise:
        gap = gap + noise * torch.randn(gap.shape, generator=generator, dtype=DTYPE) \
            - noise * torch.randn(gap.shape, generator=generator, dtype=DTYPE)
    first_wins = gap >= 0
    return PairSample(state, torch.where(first_wins, first, second),
                      torch.where(first_wins, second, first),
                      pref=torch.sigmoid(gap.abs() / temperature))


def enumerate_draws(counts: torch.Tensor, reward: torch.Tensor
                    ) -> tuple[torch.Tensor, PairSample]:
    """Every outcome (s, winner, loser) of one draw of :func:`sample_pairs`, each once, and
    its probability ``(K,)``: (n(s, w, l) + n(s, l, w))·σ(r*(s, w) − r*(s, l)) / Σn."""
    either = counts + counts.transpose(1, 2)                 # the unordered pair is drawn
    s, w, l = torch.nonzero(either > 0, as_tuple=True)
    prob = either[s, w, l] * torch.sigmoid(reward[s, w] - reward[s, l])   # BTL(r*)
    return prob / counts.sum(), PairSample(s, w, l)


def sample_groups(rho: torch.Tensor, behaviour: torch.Tensor, reward: torch.Tensor, n: int,
                  k: int, generator: torch.Generator, *, disagree: torch.Tensor | None = None,
                  factor: float = 1000.0, soft: tuple[float, float] | None = None
                  ) -> PairSample:
    """The shape of multi-completion data: prompts s ~ ρ, k responses i.i.d. from
    ``behaviour`` ``(S, A)`` (probabilities), every pair of distinct responses labelled by
    BTL(``reward``) (``soft`` = (noise, T): one noisy rating per response of the group,
    :func:`rating_labels`); groups are drawn until n pairs exist, and the first n are kept.

    ``disagree`` ``(S, A, A)`` bool: keep a drawn group with probability ``factor``^(m − M),
    m of its M pairs of distinct responses marked — each marked pair multiplies the group's
    weight by ``factor``, as the anti-aligned design weighs its pairs (groups without a marked
    pair are dropped): groups whose comparisons mostly disagree with a direction.
    """
    if k < 2:
        raise ValueError(f"responses per prompt must be >= 2, got {k}")
    first, second = torch.triu_indices(k, k, offset=1)
    if disagree is not None and not bool(disagree.any()):
        raise ValueError("disagreeing groups: no pair is marked, so no group can be kept")
    states, chosen, rejected, prefs, total, rate, draws = [], [], [], [], 0, 1.0, 0
    while total < n:
        draws += 1
        if draws > 1000:
            raise ValueError(f"disagreeing groups: {total} of {n} pairs after 1000 draws; "
                             "lower the group factor")
        groups = min(max(1, math.ceil((n - total) / first.numel() * 1.2 / rate)), 2_000_000)
        s = torch.multinomial(rho, groups, replacement=True, generator=generator)
        a = torch.multinomial(behaviour[s], k, replacement=True, generator=generator)
        x, y = a[:, first], a[:, second]                          # (groups, pairs)
        distinct = x != y
        if disagree is not None:
            marked = (disagree[s[:, None], x, y] & distinct).sum(1)
            keep = float(factor) ** (marked - distinct.sum(1)).to(DTYPE)
            accept = torch.rand(groups, generator=generator, dtype=DTYPE) < keep
            accept &= marked > 0
            rate = max(float(accept.double().mean()), 1e-4)
            s, a, x, y, distinct = s[accept], a[accept], x[accept], y[accept], distinct[accept]
        rating = reward[s[:, None], a]                            # (groups, k)
        if soft is not None:
            rating = rating + soft[0] * torch.randn(rating.shape, generator=generator,
                                                    dtype=DTYPE)
        r_x, r_y = rating[:, first][distinct], rating[:, second][distinct]
        s = s[:, None].expand(-1, first.numel())[distinct]
        x, y = x[distinct], y[distinct]
        if soft is not None:
            part = rating_labels(s, x, y, r_x, r_y, (0.0, soft[1]), generator)
        else:
            x_wins = torch.rand(s.numel(), generator=generator, dtype=DTYPE) < torch.sigmoid(
                r_x - r_y)                                        # BTL(r*)
            part = PairSample(s, torch.where(x_wins, x, y), torch.where(x_wins, y, x))
        states.append(part.state)
        chosen.append(part.chosen)
        rejected.append(part.rejected)
        if part.pref is not None:
            prefs.append(part.pref)
        total += part.state.numel()
    pref = torch.cat(prefs)[:n] if prefs else None
    return PairSample(torch.cat(states)[:n], torch.cat(chosen)[:n], torch.cat(rejected)[:n],
                      pref=pref)
