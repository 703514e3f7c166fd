"""Pairwise accuracies on hand-made scores: by log-prob and by implicit reward."""


import pytest
import torch

from auxdpo.harness.evaluation.metrics import (
    implicit_reward_accuracy,
    pairwise_accuracy,
    pairwise_metrics,
)

# ------------------------------------------------------------------ pairwise


def test_pairwise_accuracy_is_strict():
    # 1>0 yes, 2>2 no (tie), 3>4 no, 0>-1 yes → 2/4
    assert pairwise_accuracy([1, 2, 3, 0], [0, 2, 4, -1]) == 0.5


def test_logp_and_implicit_reward_accuracies_differ_when_the_reference_prefers():
    # pair 1: policy −5 vs −1 (log-prob says rejected), reference −10 vs −1:
    #   implicit rewards β·(−5+10)=5β vs β·(−1+1)=0 → chosen.
    # pair 2: policy −1 vs −3, reference −1 vs −4: log-prob → chosen; rewards 0 vs β → rejected.
    pc, pr = torch.tensor([-5.0, -1.0]), torch.tensor([-1.0, -3.0])
    rc, rr = torch.tensor([-10.0, -1.0]), torch.tensor([-1.0, -4.0])
    assert pairwise_accuracy(pc, pr) == 0.5
    assert implicit_reward_accuracy(pc, pr, rc, rr, beta=0.1) == 0.5
    metrics = pairwise_metrics(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.1)
    assert metrics == {"n_pairs": 1, "logp_accuracy": 0.0, "implicit_reward_accuracy": 1.0,
                       "reference_logp_accuracy": 0.0}


def test_pairwise_bad_input():
    with pytest.raises(ValueError, match="lengths differ"):
        pairwise_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="beta must be positive"):
        implicit_reward_accuracy([0], [0], [0], [0], beta=0)
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy([], [])
