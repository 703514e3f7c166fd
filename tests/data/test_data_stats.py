"""What `auxdpo data check` concludes from how pairs share their responses."""

from __future__ import annotations

import pytest

from auxdpo.data.stats import ACTS_FROM, aux_verdict, comparison_stats

SECTION = 'see README.md, "When AuxDPO helps, and when it does not"'


def _all_pairs(prompts: int, answers: int):
    """Every pair among ``answers`` answers of each prompt: each answer in answers − 1 pairs."""
    return [(f"p{k}", f"a{i}", f"a{j}") for k in range(prompts) for i in range(answers)
            for j in range(i + 1, answers)]


@pytest.mark.parametrize("answers, pairs_per_response, verdict", [
    (2, 1.0, "AuxDPO's offsets cannot act in one epoch (each response is in one pair); use "
             "DPO or multi-comparison data (several rated responses per prompt, every pair)"),
    (4, 3.0, "AuxDPO stays close to DPO (the prior on the offsets holds an offset "
             "compared few times near 0"),
    (7, 6.0, "AuxDPO can correct DPO's misspecification (response offsets act in one epoch)"),
], ids=["one-pair-per-prompt", "4-rated", "7-rated"])
def test_verdict_follows_pairs_per_response(answers, pairs_per_response, verdict):
    stats = comparison_stats(_all_pairs(3, answers))
    assert stats.pairs_per_response == pairs_per_response
    line = aux_verdict(stats)
    assert line.startswith(f"{pairs_per_response:.2f} pairs per response: {verdict}")
    assert line.endswith(SECTION)


def test_verdict_thresholds_and_empty_data():
    assert ACTS_FROM == 5.0
    five = comparison_stats(_all_pairs(2, 6))  # 5 pairs per response: the "can correct" side
    assert five.pairs_per_response == 5.0 and "can correct" in aux_verdict(five)
    assert aux_verdict(comparison_stats([])) == "no pairs: nothing to train on"
    # one response shared, the rest not: mean above 1, so no longer "cannot act"
    mixed = comparison_stats([("p", "a", "b"), ("p", "a", "c")])
    assert mixed.pairs_per_response == 4 / 3 and "stays close to DPO" in aux_verdict(mixed)
