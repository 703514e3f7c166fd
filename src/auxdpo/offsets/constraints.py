"""Building blocks of AuxDPO's constraint modes: the null-space basis of A, the memory check
that guards the exact ``projection`` mode, and the lazy row-wise Adam that keeps the
``global`` mode's running product u = A·δ exact.
"""

from __future__ import annotations

import torch

__all__ = ["MODES", "ROW_OPTIMIZERS", "RowAdam", "RowSGD", "check_projection_memory",
           "first_occurrences", "null_space_basis", "validate_offsets_config"]

MODES = ("global", "batch", "projection")


def check_projection_memory(dim: int, num_examples: int, dtype: torch.dtype,
                            budget_bytes: int) -> int:
    """Bytes of A (d × 2n) in ``dtype``; ValueError naming the alternatives if over budget."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    needed = dim * 2 * num_examples * itemsize
    if needed > budget_bytes:
        raise ValueError(
            f"mode='projection' needs the explicit reference Jacobian A of {dim} trainable "
            f"parameters × {2 * num_examples} responses = {needed / 2**30:.2f} GiB, over the "
            f"memory budget of {budget_bytes / 2**30:.2f} GiB. Use mode='global' (exact "
            "dataset-wide penalty, O(d) memory) or mode='batch' (batchwise relaxation), train "
            "fewer parameters (LoRA, last block), or raise memory_budget_bytes.")
    return needed


def null_space_basis(jacobian_t: torch.Tensor, rtol: float | None = None
                     ) -> tuple[torch.Tensor, int]:
    """Orthonormal basis Γ of N(A) ⊂ R^{2n} from Aᵀ given as ``(2n, d)``, and rank(A).

    Thin SVD Aᵀ = U S Vᵀ: the columns of U whose singular value is below
    ``rtol · s_max`` span N(A) together with, when d < 2n, the orthogonal complement of U's
    columns (completed by a QR factorisation). Default ``rtol = max(2n, d) · eps(dtype)``.

    Returns:
        ``(Γ, rank)`` with Γ of shape ``(2n, 2n − rank)`` and orthonormal columns.
    """
    rows, dim = jacobian_t.shape
    if rtol is None:
        rtol = max(rows, dim) * torch.finfo(jacobian_t.dtype).eps
    left, singular, _ = torch.linalg.svd(jacobian_t, full_matrices=False)
    threshold = rtol * singular.max() if singular.numel() else 0.0
    rank = int((singular > threshold).sum()) if singular.numel() else 0
    pieces = [left[:, rank:]]
    if dim < rows:
        complete, _ = torch.linalg.qr(left, mode="complete")
        pieces.append(complete[:, dim:])
    return torch.cat(pieces, dim=1), rank


def first_occurrences(index: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: position k holds a row not in ``seen`` and not earlier in ``index``.

    Marks the rows it selects in ``seen`` (``(n,)`` bool, modified in place), so that a
    quantity summed over several batches counts every dataset row once.
    """
    keep = torch.zeros(index.shape[0], dtype=torch.bool, device=index.device)
    for position, row in enumerate(index.tolist()):
        if not seen[row]:
            seen[row] = True
            keep[position] = True
    return keep


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


def validate_offsets_config(num_examples, mode, lambda_null, lambda_amp, amp_sign, delta_cap,
                            recompute_every) -> None:
    """ValueError naming the field for a bad :class:`auxdpo.offsets.AuxOffsets` setting."""
    if not (isinstance(num_examples, int) and num_examples > 0):
        raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if lambda_null < 0 or lambda_amp < 0:
        raise ValueError(f"lambda_null and lambda_amp must be >= 0, got {lambda_null}, "
                         f"{lambda_amp} (the amplitude term's sign is amp_sign)")
    if amp_sign not in (1, -1):
        raise ValueError(f"amp_sign must be +1 or -1, got {amp_sign!r}")
    if lambda_amp and mode != "batch":
        raise ValueError(f"lambda_amp is the batch mode's amplitude term; mode={mode!r} "
                         "takes lambda_amp=0")
    if delta_cap is not None and (delta_cap <= 0 or mode == "projection"):
        raise ValueError(f"delta_cap must be > 0 and is not available in projection mode "
                         f"(cap·tanh would leave N(A)); got {delta_cap!r} with mode={mode!r}")
    if not (isinstance(recompute_every, int) and recompute_every >= 0):
        raise ValueError(f"recompute_every must be an int >= 0, got {recompute_every!r}")
