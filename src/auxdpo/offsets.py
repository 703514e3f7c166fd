"""AuxDPO's auxiliary offsets δ (paper Sec. 4.2 and 7.2): storage, constraint modes, state.

δ ∈ R^{n×2} holds one offset per response of the n dataset examples (column 0 chosen,
column 1 rejected), in reward units: the loss is −log σ(β·h + δ_w − δ_l)
(:func:`auxdpo.losses.auxdpo_loss`). As a vector of R^{2n} it is ordered
(δ_{0,w}, δ_{0,l}, δ_{1,w}, ...), and A = [∇log π_θ₀(a_j|s_j)]_j is d × 2n in that order.

Modes (see docs/offsets.md for the derivations):

``global``      the paper's empirical loss (Sec. 4.2): (1/n)Σℓ_i + λ‖Aδ/(2n)‖² over the whole
                dataset, kept exact with u = A·δ: the batch's penalty gradient is
                2λ/(2n)²·A_Bᵀu (one JVP), then u += A_B·Δδ_B (one VJP). Lazy row-wise Adam,
                so that only the batch's rows of δ move.
``batch``       the batchwise relaxation (Sec. 7.2), normalised like the mean DPO loss over
                the global batch G: λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G).
``projection``  δ = Γc with Γ an orthonormal basis of N(A) (Sec. 7.2), A computed once; exact.

The DPO part's δ-gradients come from the trainer's backward pass (its loss is a mean over the
global batch G); :meth:`AuxOffsets.step` adds the penalty's gradient with the matching scale
and steps δ's own optimizer. δ is not a model parameter: it has its own learning rate and is
outside the model's gradient clipping.

Multi-process (DDP, ZeRO-1/2; docs/scaling.md): every process keeps the whole δ, its optimizer
state and u. ``step(global_batch_size=G_r)`` takes this process's example count; G = Σ_r G_r.
A process's δ-gradient rows are means over its G_r rows, so they are weighted by G_r/G and
summed over processes (one all-reduce of an n×3 table that also marks the step's rows); the
global mode's u += A_B·Δδ_B sums each process's VJP over the rows it owns (all-reduce of d
floats); the batch mode's A_B·δ_B is all-reduced before its JVPs. Every process then applies
the identical row update, so δ, its optimizer state and u stay equal everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping

import torch

from auxdpo.constraints import (
    MODES,
    ROW_OPTIMIZERS,
    check_projection_memory,
    first_occurrences,
    null_space_basis,
    validate_offsets_config,
)
from auxdpo.distributed import (
    all_reduce_,
    broadcast_,
    check_engine_support,
    combine_row_gradients,
    is_distributed,
    rows_owned_elsewhere,
)
from auxdpo.products import Linearization, ReferenceProducts

__all__ = ["MODES", "AuxOffsets"]

Batch = Mapping[str, torch.Tensor]


class AuxOffsets:
    """δ ∈ R^{n×2} (chosen, rejected) per dataset example, its constraint mode and optimizer.

    Usage by a trainer (one optimizer step, gradient accumulation over micro-batches)::

        offsets.prepare(train_batches)          # once before training (all rows, aux_index)
        for micro_batch in step_micro_batches:
            dc, dr = offsets.deltas(micro_batch["aux_index"])    # (B,), (B,) differentiable
            loss = auxdpo_loss(..., delta_chosen=dc, delta_rejected=dr).losses.sum() / G
            loss.backward()
            offsets.accumulate(micro_batch)
        metrics = offsets.step(global_batch_size=G)

    Args:
        num_examples: n, the dataset size; ``aux_index`` values lie in ``[0, n)``.
        products: products with the reference Jacobian (defines θ, θ₀ and sum/mean log-probs).
        mode: "global" | "batch" | "projection".
        lambda_null: λ of the global penalty, λ_null of the batch penalty (ignored by projection).
        lambda_amp: λ_amp of the batch mode's amplitude term (must be 0 in other modes).
        amp_sign: +1 penalises ‖δ_B‖² (a stabiliser in the minimised loss), −1 rewards it
            (the authors' notebook); see docs/offsets.md for the reading of the paper's sign.
        delta_lr: learning rate of δ's Adam (of c in projection mode).
        delta_cap: if set, δ = cap·tanh(raw) is bounded by cap (global and batch modes).
        recompute_every: recompute u = A·δ from scratch every K steps (global; 0 = never).
            Needs re-iterable dataset batches given to :meth:`prepare`.
        dtype: dtype of δ, its optimizer state and u (at least float32: bf16/fp16 become
            float32, since u accumulates many small updates).
        betas, eps: Adam's.
        optimizer: "adam" (lazy row-wise Adam) or "sgd" (lazy SGD, reveals gradients in tests).
        memory_budget_bytes: largest A (d × 2n) the projection mode may build.
        keep_reference_graph: :meth:`reference_logps` keeps the tail's autograd graph of each
            micro-batch until :meth:`step`, whose VJP is then a backward pass only (faster,
            holds those activations; see docs/offsets.md).
    """

    def __init__(self, num_examples: int, products: ReferenceProducts, *, mode: str = "global",
                 lambda_null: float = 1.0, lambda_amp: float = 0.0, amp_sign: int = +1,
                 delta_lr: float = 1e-2, delta_cap: float | None = None,
                 recompute_every: int = 0, dtype: torch.dtype = torch.float32,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 memory_budget_bytes: int = 2 * 1024**3, optimizer: str = "adam",
                 keep_reference_graph: bool = False) -> None:
        validate_offsets_config(num_examples, mode, lambda_null, lambda_amp, amp_sign,
                                delta_cap, recompute_every)
        check_engine_support(mode, getattr(products, "model", None))
        if optimizer not in ROW_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(ROW_OPTIMIZERS)}, "
                             f"got {optimizer!r}")
        self._optimizer_class = ROW_OPTIMIZERS[optimizer]
        if mode == "batch" and amp_sign < 0 and lambda_amp > 0 and delta_cap is None:
            warnings.warn("amp_sign=-1 rewards ‖δ_B‖² without bound along the null space of "
                          "A_B; set delta_cap to keep δ finite", RuntimeWarning, stacklevel=2)
        if torch.finfo(dtype).bits < 32:
            dtype = torch.float32   # u accumulates many small updates: never in bf16/fp16
        self.num_examples, self.products, self.mode = num_examples, products, mode
        self.lambda_null, self.lambda_amp, self.amp_sign = lambda_null, lambda_amp, amp_sign
        self.delta_cap, self.recompute_every, self.dtype = delta_cap, recompute_every, dtype
        self.memory_budget_bytes = memory_budget_bytes
        self.device = products.device
        self.num_steps = 0
        self._pending: list[Batch] = []
        self.keep_reference_graph = keep_reference_graph
        self._linearized: dict[tuple[int, ...], list[tuple[int, Linearization]]] = {}
        self._u_version = 0                # bumped whenever u changes (fused JVPs go stale)
        self._dataset_batches: Iterable[Batch] | None = None
        self._last_metrics: dict[str, float] = {}
        self._optimizer_args = {"lr": delta_lr, "betas": betas, "eps": eps, "dtype": dtype,
                                "device": self.device}
        if mode == "projection":
            check_projection_memory(products.dim, num_examples, dtype, memory_budget_bytes)
            self.jacobian_t: torch.Tensor | None = None       # Aᵀ, (2n, d), set by prepare
            self.basis = torch.zeros(2 * num_examples, 0, dtype=dtype, device=self.device)
            self.coef = torch.zeros(1, 0, dtype=dtype, device=self.device, requires_grad=True)
            self.optimizer = self._optimizer_class((1, 0), **self._optimizer_args)
        else:
            self.raw = torch.zeros(num_examples, 2, dtype=dtype, device=self.device,
                                   requires_grad=True)
            self.optimizer = self._optimizer_class((num_examples, 2), **self._optimizer_args)
        self.u = (torch.zeros(products.dim, dtype=dtype, device=self.device)
                  if mode == "global" else None)

    # ---- values ------------------------------------------------------------------------------

    def _from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.delta_cap is None else self.delta_cap * torch.tanh(raw)

    def table(self) -> torch.Tensor:
        """All offsets, ``(n, 2)`` (chosen, rejected), detached."""
        with torch.no_grad():
            if self.mode == "projection":
                return (self.basis @ self.coef[0]).view(self.num_examples, 2)
            return self._from_raw(self.raw).clone()

    def deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ_chosen, δ_rejected), each ``(B,)``, of dataset rows ``index`` ``(B,)``.

        Differentiable with respect to δ's own parameters (raw offsets or c).
        """
        index = self._check_index(index)
        if self.mode == "projection":
            rows = self.basis.view(self.num_examples, 2, self.basis.shape[1])[index] @ self.coef[0]  # δ = Γc
        else:
            rows = self._from_raw(self.raw[index])
        return rows[:, 0], rows[:, 1]

    def _check_index(self, index: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index, device=self.device).long().reshape(-1)
        if index.numel() and (index.min() < 0 or index.max() >= self.num_examples):
            raise ValueError(f"aux_index out of range [0, {self.num_examples}): "
                             f"min {int(index.min())}, max {int(index.max())}")
        return index

    def _batch_index(self, batch: Batch) -> torch.Tensor:
        if "aux_index" not in batch:
            raise ValueError("batch has no 'aux_index' (the dataset row of each example)")
        index = self._check_index(batch["aux_index"])
        rows = batch["input_ids"].shape[0]
        if rows != 2 * index.shape[0]:
            raise ValueError(f"batch has {rows} rows but aux_index has {index.shape[0]} "
                             "entries; expected 2B rows (B chosen, then B rejected)")
        return index

    # ---- lifecycle ---------------------------------------------------------------------------

    def prepare(self, batches: Iterable[Batch]) -> None:
        """Once before training. ``batches`` cover the dataset and carry ``aux_index``.

        global: computes u = A·δ (u = 0 without products while δ = 0) and keeps ``batches``
        for later recomputations if it is re-iterable (a DataLoader, a list).
        projection: builds A (per-example gradients) and the orthonormal basis Γ of N(A).
        """
        if not isinstance(batches, Iterator):          # a list or a DataLoader: re-iterable
            self._dataset_batches = batches
        elif self.recompute_every and self.mode == "global":
            raise ValueError("recompute_every > 0 needs re-iterable batches in prepare() "
                             "(a DataLoader or a list, not an iterator)")
        if self.mode == "global":
            self.recompute_u(batches)
        elif self.mode == "projection":
            self._build_null_space(batches)

    def accumulate(self, batch: Batch) -> None:
        """Remember a micro-batch for this optimizer step's products (after its backward)."""
        self._batch_index(batch)
        self._pending.append(batch)

    def reference_logps(self, batch: Batch, captured=None) -> torch.Tensor:
        """``(2B,)`` reference log-probs log π_θ₀ of a training micro-batch, from the products.

        Fused path for a trainer whose loss needs the reference log-probs anyway: in global
        mode the same pass carries the tangent u and gives A_Bᵀu (u is fixed until
        :meth:`step`); the batch's prefix pass (truncated products) or graph
        (``keep_reference_graph``) is kept, so :meth:`step` uses them for this micro-batch
        instead of new passes. Call it before :meth:`accumulate` for the same batch.
        ``captured``: the tail's inputs recorded from the policy's forward on this batch
        (:meth:`auxdpo.tail.TailPlan.recording`); the frozen prefix then does not run again.
        """
        index = self._batch_index(batch)
        tangent = None
        if self.mode == "global" and torch.any(self.u != 0):
            tangent = self.u.to(self.products.dtype)
        keep = self.keep_reference_graph and self.mode != "projection"
        linear = self.products.linearize(batch, tangent, keep_graph=keep, captured=captured)
        if self.mode != "projection":
            key = tuple(index.tolist())
            self._linearized.setdefault(key, []).append((self._u_version, linear))
        return linear.logps

    def _take_linearization(self, index: torch.Tensor) -> Linearization | None:
        queue = self._linearized.get(tuple(index.tolist()))
        if not queue:
            return None
        version, linear = queue.pop(0)
        return linear if version == self._u_version else None

    def step(self, global_batch_size: int) -> dict[str, float]:
        """Add the penalty's δ-gradient, step δ's optimizer on the accumulated rows only,
        update u, zero δ's gradients and forget the micro-batches. ``global_batch_size`` is
        the number of examples this process accumulated for the step (the global batch G on
        one process; under torch.distributed the processes' counts are summed into G).
        Returns the metrics ``aux/penalty``, ``aux/delta_norm``, ``aux/null_residual``,
        ``aux/delta_margin`` (and ``aux/null_dim`` in projection mode)."""
        if global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if not self._pending:
            raise ValueError("step() called with no accumulated micro-batch; call "
                             "accumulate(batch) after each micro-batch's backward")
        batches, self._pending = self._pending, []
        indices = [self._batch_index(b) for b in batches]
        linears = [self._take_linearization(i) for i in indices]
        self._linearized = {}
        local_size = global_batch_size
        global_batch_size = int(all_reduce_(torch.tensor([local_size], dtype=torch.long,
                                                         device=self.device)).item())
        local_weight = local_size / global_batch_size       # this process's share of the mean
        if self.mode == "projection":
            metrics = self._step_projection(local_weight)
        else:
            metrics = self._step_rows(batches, indices, global_batch_size, local_weight,
                                      linears)
        self.num_steps += 1
        if (self.mode == "global" and self.recompute_every
                and self.num_steps % self.recompute_every == 0):
            self.recompute_u(self._dataset_batches)
        delta = self.table()
        margins = torch.cat([delta[i, 0] - delta[i, 1] for i in indices])
        metrics["aux/delta_norm"] = float(delta.norm())
        metrics["aux/delta_margin"] = float(margins.mean())
        if self.mode == "global":
            metrics["aux/null_residual"] = _ratio(self.u.norm(), delta.norm())
        self._last_metrics = metrics
        return dict(metrics)

    def metrics(self) -> dict[str, float]:
        """Metrics of the last step (empty before the first)."""
        return dict(self._last_metrics)

    # ---- global and batch modes --------------------------------------------------------------

    def _step_rows(self, batches: list[Batch], indices: list[torch.Tensor],
                   global_batch_size: int, local_weight: float = 1.0,
                   linears: list[Linearization | None] | None = None) -> dict[str, float]:
        products = [_BatchProducts(self.products, b, lin)
                    for b, lin in zip(batches, linears or [None] * len(batches))]
        with torch.no_grad():
            delta = self._from_raw(self.raw)
            penalty_grad = torch.zeros_like(delta)                   # ∂penalty/∂δ, (n, 2)
            if self.mode == "global":
                penalty = self._global_penalty_grad(products, indices, global_batch_size,
                                                    penalty_grad)
                metrics = {"aux/penalty": penalty}
            else:
                metrics = self._batch_penalty_grad(products, indices, global_batch_size, delta,
                                                   penalty_grad)
            raw_grad = self.raw.grad if self.raw.grad is not None else torch.zeros_like(delta)
            grad = raw_grad * local_weight + penalty_grad * self._ddelta_draw()  # cap's chain rule
            grad, rows = combine_row_gradients(grad, indices, self.num_examples)
            old = delta[rows]
            self.optimizer.update(self.raw, rows, grad[rows])
            self.raw.grad = None
            if self.mode == "global":
                change = torch.zeros_like(delta)
                change[rows] = self._from_raw(self.raw[rows]) - old
                self._add_to_u(products, indices, change)            # u += A_B·Δδ_B
        return metrics

    def _ddelta_draw(self) -> torch.Tensor | float:
        if self.delta_cap is None:
            return 1.0
        return self.delta_cap * (1 - torch.tanh(self.raw.detach()) ** 2)

    def _global_penalty_grad(self, products, indices, global_batch_size, penalty_grad) -> float:
        """Adds (n/G)·2λ/(2n)²·A_Bᵀu to the batch rows; returns λ‖u/(2n)‖² (paper Sec. 4.2)."""
        n = self.num_examples
        penalty = self.lambda_null * float((self.u / (2 * n)).pow(2).sum())  # λ‖Aδ/(2n)‖²
        if not torch.any(self.u != 0):
            return penalty
        # Unbiased minibatch estimate of the full gradient up to the factor n/G of the mean loss.
        scale = (n / global_batch_size) * 2 * self.lambda_null / (2 * n) ** 2
        for batch, index in zip(products, indices):
            directional = batch.jvp_u(self.u).to(self.dtype)               # A_Bᵀu, (2B,)
            size = index.shape[0]
            penalty_grad[:, 0].index_add_(0, index, scale * directional[:size])
            penalty_grad[:, 1].index_add_(0, index, scale * directional[size:])
        return penalty

    def _batch_penalty_grad(self, products, indices, global_batch_size, delta,
                            penalty_grad) -> dict[str, float]:
        """λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G) and its gradient (Sec. 7.2)."""
        responses = 2 * global_batch_size
        occurrences = [torch.cat([delta[i, 0], delta[i, 1]]) for i in indices]
        null_image = sum(b.vjp(c).to(self.dtype)                                # A_B·δ_B
                         for b, c in zip(products, occurrences))
        squares = sum(c.pow(2).sum() for c in occurrences).reshape(1)
        if is_distributed():                     # the global batch's A_B·δ_B and ‖δ_B‖²
            packed = all_reduce_(torch.cat([null_image, squares.to(null_image.dtype)]))
            null_image, squares = packed[:-1], packed[-1:]
        squares = float(squares)
        penalty = (self.lambda_null * float(null_image.pow(2).sum()) / responses**2
                   + self.amp_sign * self.lambda_amp * squares / responses)
        null_scale = 2 * self.lambda_null / responses**2
        amp_scale = 2 * self.amp_sign * self.lambda_amp / responses
        for batch, index, values in zip(products, indices, occurrences):
            grad = amp_scale * values
            if self.lambda_null and torch.any(null_image != 0):
                grad = grad + null_scale * batch.jvp(null_image).to(self.dtype)
            size = index.shape[0]
            penalty_grad[:, 0].index_add_(0, index, grad[:size])
            penalty_grad[:, 1].index_add_(0, index, grad[size:])
        return {"aux/penalty": penalty,
                "aux/null_residual": _ratio(null_image.norm(), squares ** 0.5)}

    def _add_to_u(self, products, indices, change: torch.Tensor) -> None:
        """u += A·Δδ, every changed dataset row counted once (first occurrence)."""
        seen = rows_owned_elsewhere(indices, self.num_examples)
        update = torch.zeros_like(self.u)
        for batch, index in zip(products, indices):
            keep = first_occurrences(index.cpu(), seen).to(self.device)
            cotangent = torch.cat([change[index, 0] * keep, change[index, 1] * keep])
            if torch.any(cotangent != 0):
                update += batch.vjp(cotangent).to(self.dtype)
            batch.release()
        self.u += all_reduce_(update)                    # every process: the same A_B·Δδ_B
        self._u_version += 1

    def recompute_u(self, batches: Iterable[Batch] | None) -> None:
        """u = A·δ from scratch (global mode; a no-op in the others).

        ``batches`` must cover every dataset row whose δ is non-zero; rows seen twice count
        once. One VJP per batch; none while δ = 0.
        """
        if self.mode != "global":
            return
        delta = self.table()
        self.u = torch.zeros(self.products.dim, dtype=self.dtype, device=self.device)
        self._u_version += 1
        if not torch.any(delta != 0):
            return
        if batches is None:
            raise ValueError("recompute_u needs the dataset batches (pass them to prepare())")
        seen = torch.zeros(self.num_examples, dtype=torch.bool)
        for batch in batches:
            index = self._batch_index(batch)
            keep = first_occurrences(index.cpu(), seen).to(self.device)
            cotangent = torch.cat([delta[index, 0] * keep, delta[index, 1] * keep])
            if torch.any(cotangent != 0):
                self.u += self.products.vjp(batch, cotangent).to(self.dtype)
        missing = (~seen).to(self.device) & torch.any(delta != 0, dim=1)
        if torch.any(missing):
            rows = torch.nonzero(missing).flatten()
            raise ValueError(f"recompute_u: {rows.numel()} dataset rows with non-zero δ are "
                             f"missing from the batches (first: {int(rows[0])})")
        broadcast_(self.u)          # each process passed over the whole dataset: keep rank 0's

    # ---- projection mode ---------------------------------------------------------------------

    def _build_null_space(self, batches: Iterable[Batch]) -> None:
        n = self.num_examples
        jacobian_t = torch.zeros(2 * n, self.products.dim, dtype=self.dtype, device=self.device)
        seen = torch.zeros(n, dtype=torch.bool)
        for batch in batches:
            index = self._batch_index(batch)
            keep = first_occurrences(index.cpu(), seen).to(self.device)
            rows = self.products.jacobian(batch).to(self.dtype)                 # (2B, d)
            size = index.shape[0]
            jacobian_t[2 * index[keep]] = rows[:size][keep]
            jacobian_t[2 * index[keep] + 1] = rows[size:][keep]
        if not bool(seen.all()):
            missing = torch.nonzero(~seen).flatten()
            raise ValueError(f"projection: {missing.numel()} dataset rows are missing from "
                             f"the batches given to prepare() (first: {int(missing[0])})")
        basis, rank = null_space_basis(jacobian_t)
        broadcast_(basis)                        # every process: rank 0's Γ, bit for bit
        if rank >= 2 * n:
            warnings.warn(
                f"projection: 2n = {2 * n} responses ≤ rank(A) = {rank}, so N(A) = {{0}}: δ "
                "is forced to 0 and AuxDPO reduces to DPO. Use more data, fewer trainable "
                "parameters, or mode='global'.", RuntimeWarning, stacklevel=3)
        self.jacobian_t, self.basis, self.rank = jacobian_t, basis, rank
        self._reset_coef(basis.shape[1])

    def _reset_coef(self, size: int) -> None:
        self.coef = torch.zeros(1, size, dtype=self.dtype, device=self.device,
                                requires_grad=True)
        self.optimizer = self._optimizer_class((1, size), **self._optimizer_args)

    def _step_projection(self, local_weight: float = 1.0) -> dict[str, float]:
        grad = self.coef.grad if self.coef.grad is not None else torch.zeros_like(self.coef)
        grad = all_reduce_(grad * local_weight)              # the global batch's mean
        if self.coef.numel():
            self.optimizer.update(self.coef, torch.zeros(1, dtype=torch.long,
                                                         device=self.device), grad)
        self.coef.grad = None
        metrics = {"aux/penalty": 0.0, "aux/null_dim": float(self.basis.shape[1])}
        if self.jacobian_t is not None:
            delta = self.table().reshape(-1)
            metrics["aux/null_residual"] = _ratio((self.jacobian_t.T @ delta).norm(),
                                                  delta.norm())
        return metrics

    # ---- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """δ's parameters, optimizer state, u (global), Γ (projection), the step count and the
        difference JVP's step-size state."""
        state = {"mode": self.mode, "num_examples": self.num_examples,
                 "num_steps": self.num_steps, "optimizer": self.optimizer.state_dict()}
        if self.mode == "projection":
            state["coef"], state["basis"] = self.coef.detach().clone(), self.basis.clone()
        else:
            state["raw"] = self.raw.detach().clone()
        if self.mode == "global":
            state["u"] = self.u.clone()
        # The difference JVP's step size follows ‖A_Bᵀt‖/‖t‖ of the previous call; restoring
        # it makes a resumed run take the same steps as an uninterrupted one.
        state["jvp_gain"] = self.products.difference_gain
        return state

    def load_state_dict(self, state: dict, *, recompute: bool | None = None) -> None:
        """Restore :meth:`state_dict`. In global mode u is then recomputed from scratch when
        ``recompute`` is True, or None and :meth:`prepare` was given re-iterable batches."""
        for key, expected in (("mode", self.mode), ("num_examples", self.num_examples)):
            if state.get(key) != expected:
                raise ValueError(f"state {key}={state.get(key)!r} does not match {expected!r}")
        self._pending, self._linearized = [], {}
        self._u_version += 1
        self.num_steps = int(state["num_steps"])
        if self.mode == "projection":
            self.basis = state["basis"].to(self.device, self.dtype).clone()
            self._reset_coef(self.basis.shape[1])
            with torch.no_grad():
                self.coef.copy_(state["coef"])
        else:
            with torch.no_grad():
                self.raw.copy_(state["raw"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "jvp_gain" in state:
            self.products.difference_gain = state["jvp_gain"]
        if self.mode == "global":
            self.u = state["u"].to(self.device, self.dtype).clone()
            if recompute or (recompute is None and self._dataset_batches is not None):
                self.recompute_u(self._dataset_batches)


class _BatchProducts:
    """A micro-batch's products for :meth:`AuxOffsets.step`: from its fused
    :class:`Linearization` when :meth:`AuxOffsets.reference_logps` made one, else fresh."""

    def __init__(self, products: ReferenceProducts, batch: Batch,
                 linear: Linearization | None) -> None:
        self.products, self.batch, self.linear = products, batch, linear

    def jvp_u(self, u: torch.Tensor) -> torch.Tensor:
        """A_Bᵀu for this step's u (the fused pass's tangent when there was one)."""
        if self.linear is not None and self.linear.directional is not None:
            return self.linear.directional
        return self.jvp(u)

    def jvp(self, tangent: torch.Tensor) -> torch.Tensor:
        tangent = tangent.to(self.products.dtype)
        if self.linear is not None:
            return self.linear.jvp(tangent)
        return self.products.jvp(self.batch, tangent)

    def vjp(self, cotangent: torch.Tensor) -> torch.Tensor:
        if self.linear is not None:
            return self.linear.vjp(cotangent)
        return self.products.vjp(self.batch, cotangent)

    def release(self) -> None:
        if self.linear is not None:
            self.linear.release()


def _ratio(numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> float:
    denominator = float(denominator)
    return float(numerator) / denominator if denominator > 0 else 0.0

