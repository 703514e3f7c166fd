"""Policy classes of the exact lab, evaluated on every (state, action) pair.

Every class exposes the same small interface:

* ``log_probs(theta) -> (S, A)`` tensor of log π_θ(a|s), differentiable in ``theta`` ``(d,)``;
* ``theta0`` ``(d,)``: the base (reference) parameter θ₀, so π_ref = π_θ₀;
* ``dim`` (d), ``num_states`` (S), ``num_actions`` (A).

Log-linear classes (:class:`LogLinearPolicy`, hence :class:`TabularPolicy` and the paper's
1-d, 3-response class :func:`three_response_policy`) also carry their ``features`` φ(s, a) of
shape ``(S, A, d)``: for them log π_θ(a|s) − log π_θ(a'|s) = θᵀ(φ(s,a) − φ(s,a')) is linear in
θ, which the solvers exploit (DPO, IPO, AuxDPO and, for these classes, DPOP are convex).

Everything is float64: the lab is a reference for the rest of the package.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = [
    "FunctionPolicy",
    "LogLinearPolicy",
    "Policy",
    "TabularPolicy",
    "three_response_policy",
]

DTYPE = torch.float64


def _as_vector(theta, name: str) -> torch.Tensor:
    t = torch.as_tensor(theta, dtype=DTYPE).reshape(-1).clone()
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class Policy:
    """Base class: a smooth map θ ↦ log π_θ(·|s) over a finite S × A."""

    theta0: torch.Tensor
    num_states: int
    num_actions: int

    @property
    def dim(self) -> int:
        """Number of parameters d."""
        return int(self.theta0.numel())

    def log_probs(self, theta: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """log π_θ(a|s) as an ``(S, A)`` tensor for ``theta`` of shape ``(d,)``."""
        raise NotImplementedError

    def probs(self, theta: torch.Tensor) -> torch.Tensor:
        """π_θ(a|s), ``(S, A)``."""
        return self.log_probs(theta).exp()

    def score(self, theta: torch.Tensor) -> torch.Tensor:
        """∇_θ log π_θ(a|s) for every (s, a), as an ``(S·A, d)`` matrix (row-major (s, a))."""
        jac = torch.autograd.functional.jacobian(self.log_probs, theta.detach(), vectorize=True)
        return jac.reshape(-1, self.dim)

    def curvature(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_(s,a) w(s,a)·∇²_θ log π_θ(a|s) ``(d, d)`` for ``weights`` ``(S·A,)``."""
        w = weights.detach()
        return torch.autograd.functional.hessian(
            lambda t: (w * self.log_probs(t).reshape(-1)).sum(), theta.detach())

    def _check_theta(self, theta: torch.Tensor) -> torch.Tensor:
        if theta.shape != (self.dim,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}, expected ({self.dim},)")
        return theta


class LogLinearPolicy(Policy):
    """π_θ(a|s) ∝ exp(θᵀφ(s,a)) with ``features`` φ of shape ``(S, A, d)`` and any θ₀."""

    def __init__(self, features: torch.Tensor, theta0: torch.Tensor | None = None):
        phi = torch.as_tensor(features, dtype=DTYPE)
        if phi.ndim != 3:
            raise ValueError(f"features must have shape (S, A, d), got {tuple(phi.shape)}")
        if not torch.all(torch.isfinite(phi)):
            raise ValueError("features must be finite")
        self.features = phi
        self.num_states, self.num_actions, d = phi.shape
        if self.num_actions < 2:
            raise ValueError(f"features must describe at least 2 actions, got {self.num_actions}")
        self.theta0 = torch.zeros(d, dtype=DTYPE) if theta0 is None else _as_vector(
            theta0, "theta0")
        if self.theta0.numel() != d:
            raise ValueError(f"theta0 has {self.theta0.numel()} entries, features have d={d}")

    def log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        logits = self.features @ self._check_theta(theta)  # (S, A)
        return torch.log_softmax(logits, dim=-1)

    def _centred(self, theta):
        probs = self.probs(theta.detach())                              # (S, A)
        mean = torch.einsum("sa,sad->sd", probs, self.features)
        return probs, self.features - mean[:, None, :]                  # φ − E_π φ

    def score(self, theta: torch.Tensor) -> torch.Tensor:
        # Closed form: ∇ log π(a|s) = φ(s,a) − E_π(·|s) φ(s,·).
        return self._centred(theta)[1].reshape(-1, self.dim)

    def curvature(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # Closed form: ∇² log π(a|s) = −Cov_π(·|s)(φ) for every a of state s.
        probs, centred = self._centred(theta)
        per_state = weights.detach().reshape(probs.shape).sum(dim=1)     # (S,)
        return -torch.einsum("s,sa,sad,sae->de", per_state, probs, centred, centred)


class TabularPolicy(LogLinearPolicy):
    """Softmax-tabular class: one logit per (s, a), i.e. log-linear with one-hot features.

    d = S·A; θ is the flattened ``(S, A)`` logit table (row-major). It reaches every policy with
    full support, which is what the paper's tabular class needs (Eq. 2).
    """

    def __init__(self, num_states: int, num_actions: int,
                 theta0: torch.Tensor | None = None):
        if num_states < 1 or num_actions < 2:
            raise ValueError(f"need num_states >= 1 and num_actions >= 2, got "
                             f"{num_states}, {num_actions}")
        eye = torch.eye(num_states * num_actions, dtype=DTYPE)
        super().__init__(eye.reshape(num_states, num_actions, num_states * num_actions), theta0)

    def log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        # Same values as the one-hot product, without the (m × m) matmul.
        logits = self._check_theta(theta).reshape(self.num_states, self.num_actions)
        return torch.log_softmax(logits, dim=-1)


def three_response_policy(theta0: float = 0.0) -> LogLinearPolicy:
    """The paper's Proposition 2 class: one state, π_θ ∝ [e^θ, e^−θ, 1] (features [1, −1, 0])."""
    features = torch.tensor([[[1.0], [-1.0], [0.0]]], dtype=DTYPE)
    return LogLinearPolicy(features, torch.tensor([float(theta0)], dtype=DTYPE))


class FunctionPolicy(Policy):
    """Any user-supplied torch function θ ↦ log π_θ(·|s), returning an ``(S, A)`` tensor.

    The function is checked once at θ₀: right shape, finite, each row normalised
    (logsumexp = 0 within 1e-8).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], theta0: torch.Tensor):
        self.fn = fn
        self.theta0 = _as_vector(theta0, "theta0")
        out = torch.as_tensor(fn(self.theta0))
        if out.ndim != 2 or out.shape[1] < 2:
            raise ValueError(f"the policy function must return (S, A) log-probs with A >= 2, "
                             f"got shape {tuple(out.shape)}")
        if not torch.all(torch.isfinite(out)):
            raise ValueError("the policy function returned non-finite log-probs at theta0")
        row_mass = torch.logsumexp(out.to(DTYPE), dim=-1)
        if torch.max(row_mass.abs()) > 1e-8:
            raise ValueError("the policy function's rows are not normalised at theta0 "
                             f"(max |logsumexp| = {row_mass.abs().max().item():.3g})")
        self.num_states, self.num_actions = out.shape

    def log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        return self.fn(self._check_theta(theta)).to(DTYPE)
