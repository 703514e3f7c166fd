"""Which entry ("slot") of AuxDPO's offset vector δ each (row, side) of the data uses, and the
weights ω of the empirical constraint Σ_k ω_k δ_k ∇log π_ref(a_k|s_k) = 0 (docs/offsets.md).

Keyings (``aux_offsets``):

``row``       one slot per dataset row and side: slot(i, chosen) = 2i, slot(i, rejected) = 2i+1.
``response``  one slot per unique (prompt token ids, completion token ids): a response that
              occurs in several rows shares one δ, as the paper's δ(s, a) does.

Weightings (``aux_null_weights``), with c_k the number of (row, side) occurrences of slot k and
P the number of distinct prompts (each prompt of the data counts once: ρ̂ uniform over them):

``multiplicity``  ω_k = c_k (the paper's Monte Carlo sum over rows, Sec. 4.2).
``reference``     ω_k = (2n/P)·π_ref(a_k|s): δ extended by zero outside the data
                  (unnormalised sequence probabilities).
``prompt``        ω_k = (2n/P)·π_ref(a_k|s) / Σ_{k' at s} π_ref(a_k'|s): self-normalised per
                  prompt, Σ_k ω_k = 2n like multiplicity, so λ_null keeps its scale.

docs/finite_sample.md says what each tends to as the data grow.

Within a minibatch each occurrence of slot k carries the factor f_k = ω_k / c_k; the c_k
occurrences of a pass over the data then add up to ω_k (the estimate stays unbiased).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auxdpo.offsets.collectives import broadcast_

__all__ = ["KEYINGS", "NULL_WEIGHTS", "OffsetKeys", "SlotWeights", "coverage",
           "inactive_warning", "keys_from_ids", "row_keys", "slot_weights"]

KEYINGS = ("response", "row")
NULL_WEIGHTS = ("multiplicity", "reference", "prompt")


@dataclass(frozen=True)
class OffsetKeys:
    """The slot of each (row, side) and, optionally, the prompt of each slot.

    ``slots``: ``(n, 2)`` long, column 0 chosen, column 1 rejected, values in ``[0, K)``
    (every slot used). ``prompts``: ``(K,)`` long prompt ids, needed by the ``reference``
    and ``prompt`` weightings (None: unknown).
    """

    keying: str
    slots: torch.Tensor
    prompts: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.keying not in KEYINGS:
            raise ValueError(f"keying must be one of {KEYINGS}, got {self.keying!r}")
        slots = self.slots
        if slots.dim() != 2 or slots.shape[1] != 2 or slots.dtype != torch.long:
            raise ValueError(f"slots must be an (n, 2) long tensor, got {tuple(slots.shape)} "
                             f"{slots.dtype}")
        used = torch.bincount(slots.reshape(-1).cpu(), minlength=self.num_slots)
        if slots.numel() and (int(slots.min()) < 0 or bool((used == 0).any())):
            raise ValueError("slots must number the slots 0..K-1, each used at least once")
        if self.prompts is not None and self.prompts.shape != (self.num_slots,):
            raise ValueError(f"prompts must have one entry per slot ({self.num_slots}), got "
                             f"shape {tuple(self.prompts.shape)}")

    @property
    def num_examples(self) -> int:
        return self.slots.shape[0]

    @property
    def num_slots(self) -> int:
        return int(self.slots.max()) + 1 if self.slots.numel() else 0

    def counts(self) -> torch.Tensor:
        """``(K,)`` long: c_k, the (row, side) occurrences of each slot."""
        return torch.bincount(self.slots.reshape(-1).cpu(), minlength=self.num_slots)


def row_keys(num_examples: int, row_prompts: Sequence[int] | torch.Tensor | None = None
             ) -> OffsetKeys:
    """Row keying: slot 2i (chosen) and 2i+1 (rejected) of row i; ``row_prompts`` ``(n,)``
    gives each row's prompt id when known."""
    slots = torch.arange(2 * num_examples, dtype=torch.long).view(num_examples, 2)
    prompts = None
    if row_prompts is not None:
        prompts = torch.as_tensor(row_prompts, dtype=torch.long).repeat_interleave(2)
    return OffsetKeys("row", slots, prompts)


def _fingerprint(group: int, ids: tuple) -> int:
    """64-bit hash of a sequence of ids within a group (Python's tuple hash: deterministic
    for ints, computed in C; never trusted alone, see :class:`_Interner`)."""
    return hash((group, ids))


class _Interner:
    """Numbers distinct (group, id sequence) pairs in order of first appearance.

    A hit on a sequence's hash is verified against the first sequence with that hash; a
    sequence whose hash collides with a different one is numbered through an exact table, so
    two different sequences never get one number. Only references to the given lists are
    kept (and exact tuples for the rare collisions), not copies of every sequence.
    """

    def __init__(self) -> None:
        self.by_hash: dict[int, int] = {}
        self.first: list[tuple[int, list]] = []
        self.exact: dict[tuple, int] = {}

    def number(self, group: int, ids: Sequence[int]) -> int:
        ids = ids if isinstance(ids, list) else list(ids)
        values = tuple(ids)
        key = _fingerprint(group, values)
        found = self.by_hash.get(key)
        if found is None:
            found = self.by_hash[key] = self._new(group, ids)
        elif self.first[found][0] != group or self.first[found][1] != ids:
            found = self.exact.get((group, values))
            if found is None:
                found = self.exact[(group, values)] = self._new(group, ids)
        return found

    def _new(self, group: int, ids: list) -> int:
        self.first.append((group, ids))
        return len(self.first) - 1


def keys_from_ids(prompt_ids: Sequence[Sequence[int]], chosen_ids: Sequence[Sequence[int]],
                  rejected_ids: Sequence[Sequence[int]], keying: str = "response"
                  ) -> OffsetKeys:
    """Keys of a tokenised preference set (TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids``).

    A response is its prompt's exact ids and its completion's exact ids. They are hashed,
    and every hash hit is verified against the ids, so two different responses never share
    a slot (:class:`_Interner`). Slots are numbered in order of first occurrence (row 0
    chosen, row 0 rejected, row 1 chosen, ...): on data where every response is unique,
    response keying gives exactly the row layout.
    """
    if keying not in KEYINGS:
        raise ValueError(f"aux_offsets must be one of {KEYINGS}, got {keying!r}")
    n = len(prompt_ids)
    if not (len(chosen_ids) == len(rejected_ids) == n):
        raise ValueError("prompt_ids, chosen_ids and rejected_ids must have one entry per row")
    prompts = _Interner()
    row_prompt = [prompts.number(0, prompt) for prompt in prompt_ids]
    if keying == "row":
        return row_keys(n, row_prompt)
    responses = _Interner()
    slots = np.empty((n, 2), dtype=np.int64)
    for row in range(n):
        slots[row, 0] = responses.number(row_prompt[row], chosen_ids[row])
        slots[row, 1] = responses.number(row_prompt[row], rejected_ids[row])
    slot_prompt = [group for group, _ in responses.first]
    return OffsetKeys("response", torch.from_numpy(slots),
                      torch.tensor(slot_prompt, dtype=torch.long))


def slot_weights(keys: OffsetKeys, weighting: str,
                 reference_logps: torch.Tensor | None = None) -> torch.Tensor:
    """``(K,)`` float64 weights ω of the empirical constraint (module docstring).

    ``reference_logps`` ``(K,)``: log π_ref of every slot's response (``reference`` and
    ``prompt`` only; these also need ``keys.prompts``).
    """
    if weighting not in NULL_WEIGHTS:
        raise ValueError(f"aux_null_weights must be one of {NULL_WEIGHTS}, got {weighting!r}")
    counts = keys.counts().to(torch.float64)
    if weighting == "multiplicity":
        return counts
    if keys.prompts is None:
        raise ValueError(f"aux_null_weights={weighting!r} needs each slot's prompt "
                         "(OffsetKeys.prompts)")
    if reference_logps is None or reference_logps.shape != counts.shape:
        raise ValueError(f"aux_null_weights={weighting!r} needs the reference log-prob of "
                         f"each of the {counts.numel()} slots")
    prompts = keys.prompts.cpu()
    logps = reference_logps.detach().cpu().to(torch.float64)
    groups = int(prompts.max()) + 1
    seen = torch.zeros(groups, dtype=torch.bool)
    seen[prompts] = True
    per_prompt = counts.sum() / seen.sum()                # 2n/P: every prompt counts once
    if weighting == "reference":
        return per_prompt * logps.exp()
    # (2n/P) · softmax over the prompt's slots, shifted by the prompt's largest log-prob.
    top = torch.full((groups,), -torch.inf, dtype=torch.float64).scatter_reduce_(
        0, prompts, logps, reduce="amax")
    scores = (logps - top[prompts]).exp()
    totals = torch.zeros(groups, dtype=torch.float64).index_add_(0, prompts, scores)
    return per_prompt * scores / totals[prompts]


class SlotWeights:
    """ω ``(K,)`` of one offsets object and the factor f = ω/c its occurrences carry
    (``weights`` None until set: the reference and prompt weightings are known only after a
    pass over the data).

    Args:
        counts: c ``(K,)``, every slot's occurrences, in the offsets' dtype and device.
    """

    def __init__(self, counts: torch.Tensor) -> None:
        self.counts = counts
        self.weights: torch.Tensor | None = None
        self.factors: torch.Tensor | None = None     # f = ω/c per occurrence (None: all 1)
        self.unit = False                            # ω = 1 everywhere (row multiplicity)

    def set(self, weights: torch.Tensor) -> None:
        """Take ω (moved to the counts' dtype and device)."""
        self.weights = weights.to(self.counts.device, self.counts.dtype)
        factors = self.weights / self.counts
        self.factors = None if torch.equal(factors, torch.ones_like(factors)) else factors
        self.unit = bool(torch.all(self.weights == 1))

    def per_occurrence(self, values: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """``values`` of occurrences of ``slots`` times their f (unchanged when f = 1)."""
        return values if self.factors is None else values * self.factors[slots]

    def measure(self, keys: OffsetKeys, weighting: str, reference_logps: torch.Tensor) -> None:
        """Set ω of the reference/prompt weighting from log π_ref ``(K,)`` of every slot (NaN:
        a slot the pass did not meet, refused); warns where ω underflows to 0."""
        if bool(torch.isnan(reference_logps).any()):
            raise ValueError(f"null_weights={weighting!r}: "
                             f"{int(torch.isnan(reference_logps).sum())} slots are missing "
                             "from the batches given to prepare()")
        weights = slot_weights(keys, weighting, reference_logps).to(self.counts.device)
        if bool((weights == 0).any()):
            advice = ("use null_weights='prompt'" if weighting == "reference" else
                      "they are far less likely under π_ref than another response to their "
                      "prompt")
            warnings.warn(f"null_weights={weighting!r}: ω underflows to 0 for "
                          f"{int((weights == 0).sum())} of {weights.numel()} responses (π_ref "
                          f"of long sequences), which leaves their δ unconstrained; {advice}",
                          RuntimeWarning, stacklevel=4)
        self.set(broadcast_(weights))          # every process: rank 0's ω, bit for bit

    def load_state_dict(self, state: dict, weighting: str) -> None:
        """Take ω from a checkpoint ``state`` (if it has one); ValueError if this run's ω
        differs by more than 1e-6 relative (another reference model or data)."""
        if "weights" not in state:
            return
        weights = state["weights"].to(self.counts.device, self.counts.dtype)
        if self.weights is not None and not torch.allclose(weights, self.weights,
                                                           rtol=1e-6, atol=0):
            raise ValueError(f"state's constraint weights ω ({weighting}) differ from this "
                             "run's by more than 1e-6 relative: another reference model or "
                             "data")
        self.set(weights)


def coverage(keys: OffsetKeys) -> dict[str, float]:
    """How much room δ has to act: unique responses (slots), mean pairs per response, and
    the share of responses in at least two pairs (the ones a single epoch can move and use)."""
    counts = keys.counts()
    slots = max(counts.numel(), 1)
    return {"aux/unique_responses": float(counts.numel()),
            "aux/pairs_per_response": float(counts.sum()) / slots,
            "aux/shared_share": float((counts >= 2).sum()) / slots}


def inactive_warning(stats: dict[str, float], keying: str, epochs: float,
                     response_stats: dict[str, float] | None = None) -> str | None:
    """The start-up warning when no δ can enter the loss after it has moved, else None.

    A slot's δ changes only after a step that saw it; it matters once a later step sees it
    again. With every slot in one pair and at most one pass over the data, none is seen
    twice: the run is DPO.
    """
    if stats["aux/shared_share"] > 0 or epochs > 1:
        return None
    advice = "train for more than one epoch (num_train_epochs >= 2)"
    if keying == "row":
        shared = (response_stats or {}).get("aux/shared_share", 0.0)
        if shared > 0:
            advice += (f", or set aux_offsets: response ({shared:.0%} of this data's "
                       "responses occur in two or more pairs)")
        else:
            advice += ", or use aux_offsets: response on multi-comparison data"
    else:
        advice += (" or use multi-comparison data, where the same response occurs in several "
                   "pairs (e.g. all pairs among several rated completions per prompt)")
    return (f"AuxDPO cannot act in this run: every response occurs in one pair "
            f"(aux_offsets={keying}) and training covers {epochs:.2f} epoch(s), so each "
            f"offset δ changes only after its only use and the run is DPO. To let δ act, "
            f"{advice}.")
