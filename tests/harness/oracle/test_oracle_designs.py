"""Pair designs: the anti-aligned design and the disagreeing-pair mask."""


import pytest
import torch

from auxdpo.harness.oracle.designs import design_counts, disagreeing_pairs

DT = torch.float64


def test_anti_aligned_multiplies_exactly_the_disagreeing_pairs():
    gen = torch.Generator().manual_seed(0)
    probs0 = torch.softmax(torch.randn(2, 5, generator=gen, dtype=DT), dim=1)
    reward = torch.randn(2, 5, generator=gen, dtype=DT)
    scores = torch.randn(2, 5, generator=gen, dtype=DT)
    rho = torch.tensor([0.4, 0.6], dtype=DT)
    anti = design_counts("anti-aligned", rho=rho, probs0=probs0, reward=reward,
                         direction_scores=scores, factor=7.0)
    base = design_counts("on-policy", rho=rho, probs0=probs0)
    assert anti.sum() == pytest.approx(1.0) and torch.allclose(anti, anti.transpose(1, 2))
    assert torch.all(torch.diagonal(anti, dim1=1, dim2=2) == 0)
    ratio = anti / base.clamp_min(1e-300)
    off = ~torch.eye(5, dtype=torch.bool).expand(2, 5, 5)
    bad = disagreeing_pairs(reward, scores) & off
    assert bad.any() and (~bad & off).any()
    assert torch.allclose(ratio[bad] / ratio[~bad & off].mean(), torch.full_like(ratio[bad], 7.))
