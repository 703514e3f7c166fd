"""The data part of the diagnostic, by hand on small comparison sets."""

from __future__ import annotations

import pytest
import torch

from auxdpo.diagnose.data import data_report
from auxdpo.diagnose.local import Comparisons


def test_counts_separable_responses_and_components_by_hand():
    # prompt 0: responses 0, 1, 2 (0 ≻ 1, 1 ≻ 2: 0 won all, 2 lost all, 1 mixed);
    # prompt 1: responses 3, 4 compared once (3 ≻ 4), 5 never compared with them (4 ≻? no) —
    # response 5 appears in a pair with 3 labelled soft 0.5 (no winner).
    comparisons = Comparisons(torch.tensor([0, 0, 0, 1, 1, 1]),
                              torch.tensor([0, 1, 3, 5]), torch.tensor([1, 2, 4, 3]),
                              torch.tensor([1.0, 1.0, 0.9, 0.5]))
    report = data_report(comparisons)
    assert report["pairs"] == 4 and report["prompts"] == 2 and report["unique_responses"] == 6
    assert report["pairs_per_response"] == pytest.approx(8 / 6)
    assert report["shared_share"] == pytest.approx(2 / 6)                 # responses 1 and 3
    # won every: 0, 4? no — 3 ≻ 4 (p = 0.9): 3 won its decided one, 4 lost; 5: tie only.
    # separable: 0 (won), 2 (lost), 3 (won its only decided comparison), 4 (lost) → 4 of 6
    assert report["separable_share"] == pytest.approx(4 / 6)
    assert report["components_per_prompt"] == pytest.approx(1.0)          # {0,1,2}, {3,4,5}


def test_a_prompt_split_in_two_components_is_counted():
    comparisons = Comparisons(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 2]),
                              torch.tensor([1, 3]), torch.ones(2))
    assert data_report(comparisons)["components_per_prompt"] == pytest.approx(2.0)
