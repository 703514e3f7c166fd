"""Population objectives of the lab with exact gradients and Hessians.

The variables are x = (θ, c): θ ``(d,)`` the policy parameters and, for AuxDPO only, c ``(k,)``
the coordinates of the offsets δ = Γc ``(S·A,)``. Every objective depends on x only through
y = (log π_θ flattened ``(m,)``, δ ``(m,)``), and is separable over pairs (losses) or over
responses (RLHF's J). The Hessian is assembled by the chain rule

    ∇²f(x) = Jᵀ ∇²_y f J + Σ_(s,a) ∂f/∂log π(s,a) · ∇²_θ log π_θ(a|s),

with J the Jacobian of y (the score matrix at θ, and Γ); ∇²_y f is gathered from per-pair
2×2 / 4×4 blocks (a few double-backward passes over ``(P,)`` tensors, no loop over
variables), and the last term comes from :meth:`Policy.curvature` (closed form for
log-linear classes). This makes a Newton step cost O(m²·(d + k)) instead of one backward
pass per variable.
"""

from __future__ import annotations

import torch

from auxdpo.harness.lab.policies import DTYPE, Policy
from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.losses import get_loss

__all__ = ["PairLossObjective", "RLHFObjective"]


def _separable_derivatives(fn, leaves):
    """Value, per-leaf gradient and per-element Hessian blocks of Σ_k fn(leaves)_k.

    Each of the n leaves is ``(P,)``; element k of the output may depend on element k of
    each leaf only. Returns value, grads ``(n, P)`` and blocks ``(P, n, n)``.
    """
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    total = fn(*leaves).sum()
    grads = torch.autograd.grad(total, leaves, create_graph=True)
    rows = []
    for g in grads:
        if not g.requires_grad:  # affine in every leaf: no curvature
            rows.append(torch.zeros(len(leaves), g.shape[0], dtype=g.dtype))
            continue
        row = torch.autograd.grad(g.sum(), leaves, retain_graph=True, allow_unused=True)
        rows.append(torch.stack([torch.zeros_like(g) if r is None else r for r in row]))
    blocks = torch.stack(rows).permute(2, 0, 1)
    return total.detach(), torch.stack([g.detach() for g in grads]), blocks.detach()


class PairLossObjective:
    """Σ_pairs n·(soft per-pair loss) of one method (paper Eq. 3 / Eq. 7) as f(x)."""

    def __init__(self, method: str, policy: Policy, problem: PreferenceProblem, *,
                 dpop_lambda: float = 50.0, basis: torch.Tensor | None = None):
        problem.check_policy(policy)
        self.loss_fn = get_loss(method)
        self.policy, self.problem, self.basis = policy, problem, basis
        self.extra = {"dpop": {"dpop_lambda": float(dpop_lambda)}}.get(method, {})
        table = problem.pair_table()
        nA = problem.num_actions
        self.table = table
        self.first = table.state * nA + table.first     # flat (s, a) index of each pair
        self.second = table.state * nA + table.second
        ref = policy.log_probs(policy.theta0).detach().reshape(-1)
        self.ref_first, self.ref_second = ref[self.first], ref[self.second]
        self.m = problem.num_states * nA

    def split(self, x: torch.Tensor):
        d = self.policy.dim
        delta = None if self.basis is None else self.basis @ x[d:]  # δ = Γ c (Sec. 7.2)
        return x[:d], delta

    def _pair_losses(self, pw, pl, dw=None, dl=None):
        kw = dict(self.extra)
        if dw is not None:
            kw.update(delta_chosen=dw, delta_rejected=dl)
        return self.loss_fn(pw, pl, self.ref_first, self.ref_second, beta=self.problem.beta,
                            pref_prob=self.table.pref_prob, weight=self.table.weight,
                            **kw).losses

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """The population loss (differentiable in x)."""
        theta, delta = self.split(x)
        logp = self.policy.log_probs(theta).reshape(-1)
        extra = () if delta is None else (delta[self.first], delta[self.second])
        return self._pair_losses(logp[self.first], logp[self.second], *extra).sum()

    def derivatives(self, x: torch.Tensor):
        """(value, gradient ``(n,)``, Hessian ``(n, n)``) at x, exact."""
        theta, delta = self.split(x.detach())
        logp = self.policy.log_probs(theta).detach().reshape(-1)
        index = [self.first, self.second]
        leaves = [logp[self.first], logp[self.second]]
        if delta is not None:
            index += [self.first + self.m, self.second + self.m]
            leaves += [delta[self.first], delta[self.second]]
        value, grads, blocks = _separable_derivatives(self._pair_losses, leaves)
        size = 2 * self.m if delta is not None else self.m
        grad_y = torch.zeros(size, dtype=DTYPE)
        hess_y = torch.zeros(size, size, dtype=DTYPE)
        for i, rows in enumerate(index):
            grad_y.index_add_(0, rows, grads[i])
            for j, cols in enumerate(index):
                hess_y.index_put_((rows, cols), blocks[:, i, j], accumulate=True)
        return value, *_chain(self.policy, theta, self.basis, grad_y, hess_y)


def _chain(policy: Policy, theta, basis, grad_y, hess_y):
    """Gradient and Hessian in x = (θ, c) from those in y = (log π, δ)."""
    m = grad_y.shape[0] if basis is None else grad_y.shape[0] // 2
    jac_theta = policy.score(theta)                                   # (m, d)
    g_logp = grad_y[:m]
    grad = [jac_theta.T @ g_logp]
    h_tt = jac_theta.T @ hess_y[:m, :m] @ jac_theta + policy.curvature(theta, g_logp)
    if basis is None:
        return grad[0], h_tt
    h_tc = jac_theta.T @ hess_y[:m, m:] @ basis
    h_cc = basis.T @ hess_y[m:, m:] @ basis
    grad.append(basis.T @ grad_y[m:])
    hess = torch.cat([torch.cat([h_tt, h_tc], 1), torch.cat([h_tc.T, h_cc], 1)], 0)
    return torch.cat(grad), hess


class RLHFObjective:
    """−J(θ; r*) (paper Eq. 1) as f(θ), to be minimised."""

    def __init__(self, policy: Policy, problem: PreferenceProblem):
        problem.check_policy(policy)
        self.policy, self.problem = policy, problem
        self.ref = policy.log_probs(policy.theta0).detach().reshape(-1)
        self.rho = problem.rho.repeat_interleave(problem.num_actions)
        self.reward = problem.reward.reshape(-1)

    def _terms(self, logp):
        beta = self.problem.beta
        return -self.rho * logp.exp() * (self.reward - beta * (logp - self.ref))  # −Eq. 1

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        return self._terms(self.policy.log_probs(theta).reshape(-1)).sum()

    def derivatives(self, theta: torch.Tensor):
        logp = self.policy.log_probs(theta.detach()).detach().reshape(-1)
        value, grads, blocks = _separable_derivatives(self._terms, [logp])
        return value, *_chain(self.policy, theta.detach(), None, grads[0],
                              torch.diag(blocks[:, 0, 0]))
