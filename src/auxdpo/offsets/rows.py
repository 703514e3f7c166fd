"""The offsets of the ``global`` and ``batch`` modes as a parameter over slots
(:class:`RowOffsets`: raw δ ``(K,)``, optional δ = cap·tanh(raw), and its lazy row-wise
optimizer), its row update, and the lazy row-wise optimizers themselves (:class:`RowAdam`,
:class:`RowSGD`; the projection mode's c uses them too).

A step's δ-gradient is accumulated per occurrence straight into slot space (index_add over the
batch's slots); only the step's slots move (with their optimizer state), so that the global
mode's u = A·δ can follow with one VJP over them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from auxdpo.offsets.collectives import combine_row_gradients
from auxdpo.offsets.constraints import StepInputs

__all__ = ["ROW_OPTIMIZERS", "RowAdam", "RowBacked", "RowOffsets", "RowSGD", "row_optimizer"]


class RowAdam:
    """Adam whose moments and step counts live per row and change only for given rows.

    Plain Adam keeps moving every entry through its momentum even when its gradient is zero;
    for δ that would change rows outside the batch and silently invalidate u = A·δ. Here a
    row's moments, its step count (which drives its own bias correction) and its value are
    touched only when the row is in the step's batch.

    Args:
        shape: ``(rows, ...)`` of the parameter.
        lr, betas, eps: as ``torch.optim.Adam``.
    """

    def __init__(self, shape: tuple[int, ...], *, lr: float, betas: tuple[float, float],
                 eps: float, dtype: torch.dtype, device: torch.device | str) -> None:
        if lr <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or eps <= 0:
            raise ValueError(f"bad Adam hyperparameters lr={lr}, betas={betas}, eps={eps}")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = torch.zeros(shape, dtype=dtype, device=device)
        self.exp_avg_sq = torch.zeros(shape, dtype=dtype, device=device)
        self.steps = torch.zeros(shape[0], dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, param: torch.Tensor, rows: torch.Tensor, grad_rows: torch.Tensor) -> None:
        """One Adam step on ``param[rows]`` (``rows`` unique, ``(k,)``) with ``grad_rows``."""
        beta1, beta2 = self.betas
        steps = self.steps[rows] + 1
        self.steps[rows] = steps
        exp_avg = self.exp_avg[rows].mul_(beta1).add_(grad_rows, alpha=1 - beta1)
        exp_avg_sq = self.exp_avg_sq[rows].mul_(beta2).addcmul_(grad_rows, grad_rows,
                                                                 value=1 - beta2)
        self.exp_avg[rows] = exp_avg
        self.exp_avg_sq[rows] = exp_avg_sq
        shape = (-1,) + (1,) * (param.dim() - 1)
        correction1 = (1 - beta1 ** steps.to(param.dtype)).view(shape)
        correction2 = (1 - beta2 ** steps.to(param.dtype)).view(shape)
        denom = (exp_avg_sq / correction2).sqrt_().add_(self.eps)
        param[rows] = param[rows] - self.lr * (exp_avg / correction1) / denom

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "steps": self.steps.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            target = getattr(self, key)
            if state[key].shape != target.shape:
                raise ValueError(f"optimizer state {key!r} has shape "
                                 f"{tuple(state[key].shape)}, expected {tuple(target.shape)}")
            target.copy_(state[key])


class RowSGD:
    """Plain SGD on given rows: ``param[rows] -= lr · grad_rows`` (lazy by construction).

    Mostly for tests and diagnostics: the update reveals the gradient exactly.
    """

    def __init__(self, shape: tuple[int, ...], *, lr: float, dtype: torch.dtype,
                 device: torch.device | str, **_: object) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr, self.betas, self.eps = lr, (0.0, 0.0), 0.0
        self.steps = torch.zeros(shape[0], dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, param: torch.Tensor, rows: torch.Tensor, grad_rows: torch.Tensor) -> None:
        self.steps[rows] += 1
        param[rows] = param[rows] - self.lr * grad_rows

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"steps": self.steps.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.steps.copy_(state["steps"])


ROW_OPTIMIZERS = {"adam": RowAdam, "sgd": RowSGD}




def row_optimizer(name: str, *, lr: float, betas: tuple[float, float], eps: float,
                  dtype: torch.dtype, device: torch.device | str
                  ) -> Callable[[tuple[int, ...]], RowAdam | RowSGD]:
    """``shape ↦`` a new lazy optimizer ``name`` ("adam" or "sgd") with these settings."""
    if name not in ROW_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(ROW_OPTIMIZERS)}, got {name!r}")
    optimizer_class = ROW_OPTIMIZERS[name]

    def make(shape: tuple[int, ...]) -> RowAdam | RowSGD:
        return optimizer_class(shape, lr=lr, betas=betas, eps=eps, dtype=dtype, device=device)

    return make


class RowOffsets:
    """δ ``(K,)`` as a trainable parameter: ``raw`` (requires grad), δ = raw or, with
    ``cap``, δ = cap·tanh(raw), and raw's lazy row-wise optimizer (``make_optimizer``, see
    :func:`row_optimizer`)."""

    def __init__(self, num_slots: int, cap: float | None,
                 make_optimizer: Callable[[tuple[int, ...]], RowAdam | RowSGD],
                 dtype: torch.dtype, device: torch.device | str) -> None:
        self.num_slots, self.cap = num_slots, cap
        self.raw = torch.zeros(num_slots, dtype=dtype, device=device, requires_grad=True)
        self.optimizer = make_optimizer((num_slots,))

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.cap is None else self.cap * torch.tanh(raw)

    def values(self) -> torch.Tensor:
        """δ ``(K,)``, detached."""
        with torch.no_grad():
            return self.from_raw(self.raw).clone()

    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        """δ of ``slots`` (any shape), differentiable in ``raw``."""
        return self.from_raw(self.raw[slots])

    def _ddelta_draw(self) -> torch.Tensor | float:
        if self.cap is None:
            return 1.0
        return self.cap * (1 - torch.tanh(self.raw.detach()) ** 2)

    def step(self, inputs: StepInputs,
             penalty: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
             ) -> tuple[dict[str, float], torch.Tensor]:
        """One row update: ``penalty(δ, grad)`` adds the mode's penalty gradient ∂/∂δ into
        ``grad`` ``(K,)`` and returns its metrics; the prior's gradient joins it; both go
        through the cap's chain rule, join the DPO part (raw's ``.grad``, weighted by this
        process's share), are summed over processes and step the step's slots only.
        Returns the metrics (``aux/prior`` added with a prior) and the change Δδ ``(K,)``
        (zero outside the step's slots)."""
        with torch.no_grad():
            delta = self.from_raw(self.raw)
            penalty_grad = torch.zeros_like(delta)                   # ∂penalty/∂δ, (K,)
            metrics = penalty(delta, penalty_grad)
            if inputs.prior.active:                                  # + (1/G)·τ·δ_k/c_k
                metrics["aux/prior"] = inputs.prior.add_grad(
                    delta, inputs.occurrences, inputs.global_batch_size, penalty_grad)
            raw_grad = self.raw.grad if self.raw.grad is not None else torch.zeros_like(delta)
            grad = raw_grad * inputs.local_weight + penalty_grad * self._ddelta_draw()
            grad, slots = combine_row_gradients(grad.view(-1, 1), inputs.occurrences,
                                                self.num_slots)
            grad = grad.view(-1)
            old = delta[slots]
            self.optimizer.update(self.raw, slots, grad[slots])
            self.raw.grad = None
            change = torch.zeros_like(delta)
            change[slots] = self.from_raw(self.raw[slots]) - old
        return metrics, change

    def state_dict(self) -> dict:
        return {"raw": self.raw.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.raw.copy_(state["raw"])
        self.optimizer.load_state_dict(state["optimizer"])


class RowBacked:
    """What the global and batch modes share: δ is ``self.row_offsets``' own (its raw
    parameter, optimizer, values and rows); each mode sets ``row_offsets`` and owns the rest of
    its state."""

    row_offsets: RowOffsets

    @property
    def parameter(self) -> torch.Tensor:
        return self.row_offsets.raw

    @property
    def optimizer(self):
        return self.row_offsets.optimizer

    def values(self) -> torch.Tensor:
        return self.row_offsets.values()

    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        return self.row_offsets.rows(slots)
