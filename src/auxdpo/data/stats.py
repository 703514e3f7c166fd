"""How much the pairs of a data set share their responses (what ``auxdpo data check`` reports).

A response is identified by its exact (prompt, response) texts. AuxDPO's response-keyed
offsets δ(s, a) couple the pairs in which a response appears: a response seen in a single pair
gets an offset that only that pair's margin sees, so it can absorb that margin and teach
nothing. The share of responses in at least 2 pairs is therefore the share of the data where
AuxDPO can act differently from DPO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ACTS_FROM", "ComparisonStats", "aux_verdict", "comparison_stats"]

# Pairs per response from which AuxDPO's response offsets were measured to correct DPO's
# misspecification (docs/results.md, "Finite samples": ahead of DPO from ~6 per response).
ACTS_FROM = 5.0
_SECTION = 'README.md, "When AuxDPO helps, and when it does not"'


@dataclass(frozen=True)
class ComparisonStats:
    """Counts over pairs: distinct prompts and responses, and how responses are shared."""

    prompts: int
    responses: int
    responses_per_prompt: float   # mean number of distinct responses per prompt
    pairs_per_response: float     # mean number of pairs a response appears in
    share_in_2_or_more: float     # share of responses appearing in >= 2 pairs

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "responses": self.responses,
                "responses_per_prompt": self.responses_per_prompt,
                "pairs_per_response": self.pairs_per_response,
                "share_in_2_or_more": self.share_in_2_or_more}

    def as_lines(self) -> list[str]:
        return [f"prompts: {self.prompts}",
                f"responses: {self.responses} ({self.responses_per_prompt:.2f} per prompt)",
                f"pairs per response: mean {self.pairs_per_response:.2f}; in >= 2 pairs: "
                f"{100 * self.share_in_2_or_more:.1f}% of responses"]


def comparison_stats(pairs: Iterable[tuple[str, str, str]]) -> ComparisonStats:
    """Statistics of ``(prompt, chosen, rejected)`` triples (a pair listed twice counts twice)."""
    appearances: Counter = Counter()
    for prompt, chosen, rejected in pairs:
        appearances[(prompt, chosen)] += 1
        appearances[(prompt, rejected)] += 1
    responses = len(appearances)
    if not responses:
        return ComparisonStats(0, 0, 0.0, 0.0, 0.0)
    prompts = len({prompt for prompt, _ in appearances})
    return ComparisonStats(
        prompts=prompts, responses=responses, responses_per_prompt=responses / prompts,
        pairs_per_response=sum(appearances.values()) / responses,
        share_in_2_or_more=sum(count >= 2 for count in appearances.values()) / responses)


def aux_verdict(stats: ComparisonStats) -> str:
    """What AuxDPO (response offsets, the default) will do with pairs of these statistics,
    in one line a user can act on."""
    ppr = stats.pairs_per_response
    if not stats.responses:
        return "no pairs: nothing to train on"
    if stats.share_in_2_or_more == 0:
        what = ("AuxDPO's offsets cannot act in one epoch (each response is in one pair); "
                "use DPO or multi-comparison data (several rated responses per prompt, "
                "every pair)")
    elif ppr < ACTS_FROM:
        what = ("AuxDPO stays close to DPO (the prior on the offsets holds an offset "
                "compared few times near 0: with the defaults σ = 2, c½ = 16 one compared 3 "
                "times keeps about a third of its fit, one compared 60 times 98 %); expect "
                f"little gain over DPO below ~{ACTS_FROM:g}")
    else:
        what = "AuxDPO can correct DPO's misspecification (response offsets act in one epoch)"
    return f"{ppr:.2f} pairs per response: {what}; see {_SECTION}"
