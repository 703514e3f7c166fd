"""Policy metrics: pair agreement by hand, the metrics of a policy."""


import math

import pytest
import torch

from auxdpo.harness.oracle.metrics import pair_agreement, policy_metrics

DT = torch.float64


def test_pair_agreement_hand_case():
    # r* = [0, 1, 2]; change = [0, 2, 1]: pairs (0,1) ok, (0,2) ok, (1,2) reversed → 2/3.
    reward = torch.tensor([[0.0, 1.0, 2.0]], dtype=DT)
    change = torch.tensor([[0.0, 2.0, 1.0]], dtype=DT)
    assert pair_agreement(reward, change) == pytest.approx(2 / 3)
    assert pair_agreement(reward, torch.zeros(1, 3, dtype=DT)) == pytest.approx(0.5)  # ties
    weight = torch.zeros(1, 3, 3, dtype=DT)
    weight[0, 1, 2] = weight[0, 2, 1] = 1.0
    assert pair_agreement(reward, change, weight) == 0.0


def test_policy_metrics_by_hand():
    """One training prompt, one held-out prompt, two responses, π₀ uniform, r* = [1, 0]:
    π_θ = [0.8, 0.2] on the training row (ordered as r*), [0.3, 0.7] held out (reversed)."""
    log0 = torch.log(torch.full((2, 2), 0.5, dtype=DT))
    logp = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=DT))
    reward = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=DT)
    rho, beta = torch.ones(1, dtype=DT), 2.0
    kl = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    j = 0.8 - beta * kl                                        # Eq. 1
    out = policy_metrics(logp, log0, reward, rho, beta, j_base=0.0, j_rlhf=2 * j)
    assert out["J"] == pytest.approx(j, rel=1e-13)
    assert out["gap_closed"] == pytest.approx(0.5, rel=1e-13)
    assert out["reward"] == pytest.approx(0.8, rel=1e-13)
    assert out["kl"] == pytest.approx(kl, rel=1e-13)
    assert out["reversal"] == 0.0 and out["heldout_acc"] == 0.0
    base = policy_metrics(log0, log0, reward, rho, beta, j_base=0.0, j_rlhf=1.0)
    assert base["kl"] == 0.0 and base["reward"] == pytest.approx(0.5, rel=1e-13)
    assert base["reversal"] == 0.5 and base["heldout_acc"] == 0.5         # all ties: ½
    train_only = policy_metrics(logp[:1], log0[:1], reward[:1], rho, beta, j_base=0.0,
                                j_rlhf=1.0)
    assert math.isnan(train_only["heldout_acc"])
