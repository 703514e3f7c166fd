"""auxdpo.geometry against closed forms, identities and independent solves (float64)."""

import numpy as np
import pytest
import torch

from auxdpo.geometry import (
    base_weights,
    fisher_matrix,
    local_rlhf_step,
    min_norm_reward,
    min_norm_solution,
    null_space_basis,
    numerical_rank,
    score_matrix,
    weighted_score_matrix,
)
from auxdpo.harness.lab.policies import FunctionPolicy, LogLinearPolicy, three_response_policy
from tolerance import assert_close, roundoff

D64 = torch.float64



def _instance(seed=0, S=3, A=5, d=2):
    gen = torch.Generator().manual_seed(seed)
    policy = LogLinearPolicy(torch.randn(S, A, d, generator=gen, dtype=D64),
                             0.5 * torch.randn(d, generator=gen, dtype=D64))
    rho = torch.rand(S, generator=gen, dtype=D64) + 0.5
    reward = torch.randn(S, A, generator=gen, dtype=D64)
    return policy, rho / rho.sum(), reward


def _geometry(policy, rho):
    A = score_matrix(policy.log_probs, policy.theta0)
    w = base_weights(rho, policy.log_probs(policy.theta0))
    return A, w


def test_score_matrix_of_log_linear_is_centred_features():
    policy, rho, _ = _instance()
    A, _ = _geometry(policy, rho)
    probs = policy.probs(policy.theta0)
    centred = policy.features - torch.einsum("sa,sad->sd", probs, policy.features)[:, None]
    assert A.shape == (2, 15)
    assert_close(A, centred.reshape(-1, 2).T, ops=100)


def test_prop2_geometry_matches_the_paper():
    """A_θ₀ = [1, −1, 0], D = I/3, F = 2/3 (proof of Proposition 2)."""
    policy = three_response_policy()
    A, w = _geometry(policy, torch.ones(1, dtype=D64))
    torch.testing.assert_close(A, torch.tensor([[1.0, -1.0, 0.0]], dtype=D64))
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=D64))
    torch.testing.assert_close(fisher_matrix(A, w), torch.tensor([[2 / 3]], dtype=D64))


def test_fisher_identity_and_kl_hessian():
    """F = A D Aᵀ = A_ρ D⁻¹ A_ρᵀ, and F is the Hessian of E_ρ KL(π_θ ‖ π_θ₀) at θ₀."""
    policy, rho, _ = _instance(seed=1)
    A, w = _geometry(policy, rho)
    F = fisher_matrix(A, w)
    A_rho = weighted_score_matrix(A, w)
    assert_close(F, A_rho @ torch.diag(1 / w) @ A_rho.T, ops=100)
    ref = policy.log_probs(policy.theta0).detach()

    def kl(theta):
        logp = policy.log_probs(theta)
        return (rho * (logp.exp() * (logp - ref)).sum(1)).sum()

    hess = torch.autograd.functional.hessian(kl, policy.theta0)
    assert_close(F, hess, ops=100)


def test_generic_policy_derivatives_match_closed_forms():
    """A user function gets its score and curvature by autograd: same as the log-linear forms."""
    policy, _, _ = _instance(seed=2)
    generic = FunctionPolicy(policy.log_probs, policy.theta0)
    theta = policy.theta0 + 0.3
    weights = torch.linspace(-1, 2, 15, dtype=D64)
    assert_close(generic.score(theta), policy.score(theta), ops=100)
    assert_close(generic.curvature(theta, weights), policy.curvature(theta, weights), ops=100)


def test_null_space_basis_orthonormal_and_annihilated():
    policy, rho, _ = _instance(seed=3)
    A, w = _geometry(policy, rho)
    A_rho = weighted_score_matrix(A, w)
    basis = null_space_basis(A_rho)
    assert basis.shape == (15, 15 - 2)
    assert_close(basis.T @ basis, torch.eye(13, dtype=D64), ops=100)
    # A residual errs relative to the norms multiplied, not to its own (zero) size.
    assert float((A_rho @ basis).abs().max()) < roundoff(
        ops=100, scale=float(A_rho.norm() * basis.norm()))


def test_rank_tolerance_drops_tiny_singular_values():
    u, _ = torch.linalg.qr(torch.randn(4, 4, dtype=D64, generator=torch.Generator()
                                       .manual_seed(0)))
    m = u[:, :3] @ torch.diag(torch.tensor([1.0, 1e-3, 1e-20], dtype=D64)) @ u[:, :3].T
    assert numerical_rank(m) == 2
    assert null_space_basis(m).shape == (4, 2)
    assert numerical_rank(m, rtol=1e-2) == 1


def test_min_norm_representative_eq9_against_a_direct_constrained_solve():
    """argmin ‖r‖_D s.t. A_ρ r = βF(θ−θ₀) equals β Aᵀ(θ−θ₀) (Proposition 'imprwd', Eq. 9)."""
    policy, rho, _ = _instance(seed=4, S=4, A=6, d=3)
    A, w = _geometry(policy, rho)
    A_rho, F = weighted_score_matrix(A, w), fisher_matrix(A, w)
    beta, theta = 7.0, policy.theta0 + torch.tensor([0.2, -0.1, 0.05], dtype=D64)
    rhs = beta * F @ (theta - policy.theta0)
    # Independent: the KKT system [2D A_ρᵀ; A_ρ 0][r; μ] = [0; rhs], solved in numpy.
    m, d = A_rho.shape[1], A_rho.shape[0]
    kkt = np.block([[2 * np.diag(w.numpy()), A_rho.T.numpy()], [A_rho.numpy(), np.zeros((d, d))]])
    direct = np.linalg.lstsq(kkt, np.concatenate([np.zeros(m), rhs.numpy()]), rcond=None)[0][:m]
    closed = min_norm_reward(A, theta, policy.theta0, beta)
    np.testing.assert_allclose(closed.numpy(), direct, rtol=0, atol=1e-10)
    assert_close(min_norm_solution(A_rho, w, rhs), closed, ops=1e3)
    # Any other member of the class (closed + null-space vector) has a larger D-norm.
    other = closed + null_space_basis(A_rho)[:, 0]
    assert_close(A_rho @ other, rhs, ops=100)
    assert float(other @ (w * other)) > float(closed @ (w * closed))


def test_local_rlhf_step_eq5():
    """θ = θ₀ + F⁺A_ρ r*/β solves βF(θ−θ₀) = A_ρ r* (Eq. 5); in Prop. 2 it is −1/(2β)."""
    policy, rho, reward = _instance(seed=5)
    A, w = _geometry(policy, rho)
    beta = 3.0
    theta = local_rlhf_step(A, w, reward, beta, policy.theta0)
    F = fisher_matrix(A, w)
    assert_close(beta * F @ (theta - policy.theta0),
                 weighted_score_matrix(A, w) @ reward.reshape(-1), ops=1e3)
    p2 = three_response_policy()
    A2, w2 = _geometry(p2, torch.ones(1, dtype=D64))
    for beta in (0.5, 10.0):
        theta2 = local_rlhf_step(A2, w2, torch.tensor([1.0, 2.0, 0.0], dtype=D64), beta,
                                 p2.theta0)
        assert float(theta2) == pytest.approx(-1 / (2 * beta), rel=1e-13)
    with pytest.raises(ValueError, match="beta"):
        local_rlhf_step(A2, w2, torch.zeros(3, dtype=D64), 0.0, p2.theta0)


def test_unit_rows_scales_live_rows_and_zeroes_dead_ones():
    from auxdpo.geometry import unit_rows

    matrix = torch.tensor([[3.0, 4.0, 0.0], [1e-35, -1e-35, 0.0], [0.0, 0.0, -2.0]],
                          dtype=torch.float64)
    out = unit_rows(matrix)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))
    assert torch.equal(out[1], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(out[2], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))


def test_dead_score_row_does_not_shrink_the_offset_null_space():
    """A parameter whose score row is round-off (a dead channel) adds no constraint: the
    projector's null space is that of A without the row (it was one dimension short)."""
    from auxdpo.harness.oracle.solvers import NullProjector

    gen = torch.Generator().manual_seed(0)
    S, nA, d = 3, 4, 2
    A = torch.randn(d, S * nA, generator=gen, dtype=torch.float64)
    weights = torch.full((S * nA,), 1.0 / (S * nA), dtype=torch.float64)
    dead = torch.randn(1, S * nA, generator=gen, dtype=torch.float64) * 1e-35
    with_dead = NullProjector(torch.cat([A, dead]), weights, S)
    without = NullProjector(A, weights, S)
    assert with_dead.null_dim == without.null_dim == S * nA - d - S
    c = torch.randn(S * nA, generator=gen, dtype=torch.float64)
    assert_close(with_dead(c), without(c), ops=1e3)


def test_null_space_rank_shapes_and_dtype():
    """null_space: (Γ, r) for wide and tall matrices (the QR completion when k < n), Γ
    orthonormal and annihilated; a float32 matrix keeps float32 with float32's tolerance;
    integer input is read as float64."""
    from auxdpo.geometry import null_space

    gen = torch.Generator().manual_seed(5)
    for k, n, r in ((3, 7, 3), (9, 5, 4), (4, 4, 2)):
        m = torch.randn(k, r, generator=gen, dtype=D64) @ torch.randn(r, n, generator=gen,
                                                                      dtype=D64)
        basis, rank = null_space(m)
        assert rank == r and basis.shape == (n, n - r)
        assert_close(basis.T @ basis, torch.eye(n - r, dtype=D64), ops=100)
        assert float((m @ basis).abs().max()) < roundoff(ops=100, scale=float(m.norm()))
        assert torch.equal(null_space_basis(m), basis)
    single = torch.randn(3, 6, generator=gen).float()
    basis, rank = null_space(single)
    assert basis.dtype == torch.float32 and rank == 3 and basis.shape == (6, 3)
    assert null_space(torch.tensor([[1, 1, 0]]))[0].dtype == D64
