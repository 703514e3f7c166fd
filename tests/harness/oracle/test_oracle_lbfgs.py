"""The solvers' preconditioners (auxdpo.harness.oracle.lbfgs)."""

from unittest import mock

import torch

from auxdpo.harness.oracle.lbfgs import inverse_root
from tolerance import assert_close


def test_inverse_root_by_hand_and_through_the_fallback_driver():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    m = m @ m.transpose(1, 2)
    root = inverse_root(m, floor=0.0)
    # (M^{-1/2})² M = I
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    assert_close(root @ root @ m, eye, ops=1e6, scale=float(torch.linalg.cond(m).max()))
    # LAPACK's syevd failing on a block: the QR-iteration driver gives the same root
    with mock.patch("torch.linalg.eigh", side_effect=torch.linalg.LinAlgError("no")):
        other = inverse_root(m, floor=0.0)
    assert_close(other, root, ops=1e6, scale=float(root.abs().max()
                                                   * torch.linalg.cond(m).max()))
