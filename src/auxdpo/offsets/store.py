"""AuxDPO's auxiliary offsets δ (paper Sec. 4.2 and 7.2): storage over slots and its lifecycle.

δ ∈ R^K holds one offset per *slot*, in reward units: the loss is −log σ(β·h + δ_w − δ_l)
(:func:`auxdpo.losses.auxdpo_loss`). A per-row map ``slots`` ``(n, 2)`` (column 0 chosen,
column 1 rejected; :mod:`auxdpo.offsets.keys`) gives each row's two slots: row keying has
K = 2n slots ordered (δ_{0,w}, δ_{0,l}, δ_{1,w}, ...), response keying one slot per unique
(prompt, response). A = [ω_k ∇log π_θ₀(a_k|s_k)]_k is d × K, with the constraint's slot
weights ω (multiplicity: ω_k = c_k, the slot's occurrences; ω = 1 under row keying). Each
occurrence of slot k in a minibatch carries f_k = ω_k / c_k, so that one pass over the data
adds up to A·δ.

Modes (see docs/offsets.md for the derivations; each mode's penalty has its own module):

``global``      the paper's empirical loss (Sec. 4.2): (1/n)Σℓ_i + λ‖Aδ/(2n)‖² over the whole
                dataset, kept exact with u = A·δ: the batch's penalty gradient is
                2λ/(2n)²·A_Bᵀu (one JVP), then u += A_B·Δδ_B (one VJP). Lazy row-wise Adam,
                so that only the batch's rows of δ move. (:mod:`.global_mode`)
``batch``       the batchwise relaxation (Sec. 7.2), normalised like the mean DPO loss over
                the global batch G: λ_null‖A_Bδ_B/(2G)‖² + amp_sign·λ_amp‖δ_B‖²/(2G).
                (:mod:`.batch_mode`)
``projection``  δ = Γc with Γ an orthonormal basis of N(A) (Sec. 7.2), A computed once; exact.
                (:mod:`.projection`)

The DPO part's δ-gradients come from the trainer's backward pass (its loss is a mean over the
global batch G); :meth:`AuxOffsets.step` adds the penalty's gradient with the matching scale
(and, with ``delta_scale`` σ, the Gaussian prior's (τ/2n)Σδ², τ = 1/σ², as exact per-row
shares: :mod:`.prior`) and steps δ's own optimizer. δ is not a model parameter: it has its
own learning rate and is outside the model's gradient clipping.

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
from collections.abc import Iterable, Iterator

import torch

from auxdpo.offsets.batch_mode import BatchModeMixin
from auxdpo.offsets.collectives import (
    all_reduce_,
    broadcast_,
    check_engine_support,
    combine_row_gradients,
)
from auxdpo.offsets.constraints import (
    MODES,
    ROW_OPTIMIZERS,
    check_projection_memory,
    validate_offsets_config,
)
from auxdpo.offsets.global_mode import GlobalModeMixin
from auxdpo.offsets.health import HealthMixin, scaled_residual, take_probe_batches
from auxdpo.offsets.keys import NULL_WEIGHTS, OffsetKeys, row_keys, slot_weights
from auxdpo.offsets.micro_batch import Batch, BatchProducts, FusedPassMixin, occurrence_slots
from auxdpo.offsets.prior import PriorMixin, prior_precision, slot_precision
from auxdpo.offsets.products import Linearization, ReferenceProducts
from auxdpo.offsets.projection import ProjectionMixin
from auxdpo.offsets.state import OffsetsStateMixin

__all__ = ["MODES", "AuxOffsets"]


class AuxOffsets(FusedPassMixin, GlobalModeMixin, BatchModeMixin, ProjectionMixin, PriorMixin,
                 HealthMixin, OffsetsStateMixin):
    """δ over slots (one per row and side, or per unique response), its constraint mode,
    slot weights and optimizer.

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
        keys: the slot of each row and side (:mod:`auxdpo.offsets.keys`); default row keying.
        null_weights: the constraint's slot weights ω: "multiplicity" (default), "reference"
            or "prompt" (these two need ``keys.prompts`` and take the reference log-prob of
            every slot in one extra no-grad pass in :meth:`prepare`).
        delta_scale: σ of the Gaussian prior on δ (reward units): adds (τ/2n)Σ_k δ_k², τ = 1/σ²,
            to the objective (:mod:`auxdpo.offsets.prior`); None (default): no prior.
        delta_half_count: c½ of a count-dependent prior: slot k's variance σ²·c_k/(c_k + c½)
            (c_k its occurrences); None (default): σ² for every slot.
    """

    def __init__(self, num_examples: int, products: ReferenceProducts, *, mode: str = "global",
                 lambda_null: float = 1.0, lambda_amp: float = 0.0, amp_sign: int = +1,
                 delta_lr: float = 1e-2, delta_cap: float | None = None,
                 recompute_every: int = 0, dtype: torch.dtype = torch.float32,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 memory_budget_bytes: int = 2 * 1024**3, optimizer: str = "adam",
                 keep_reference_graph: bool = False, keys: OffsetKeys | None = None,
                 null_weights: str = "multiplicity", delta_scale: float | None = None,
                 delta_half_count: float | None = None) -> None:
        validate_offsets_config(num_examples, mode, lambda_null, lambda_amp, amp_sign,
                                delta_cap, recompute_every)
        keys = row_keys(num_examples) if keys is None else keys
        if keys.num_examples != num_examples:
            raise ValueError(f"keys cover {keys.num_examples} rows, expected {num_examples}")
        if null_weights not in NULL_WEIGHTS:
            raise ValueError(f"null_weights must be one of {NULL_WEIGHTS}, got {null_weights!r}")
        if null_weights != "multiplicity" and keys.prompts is None:
            raise ValueError(f"null_weights={null_weights!r} needs keys with each slot's prompt")
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
        self.delta_scale, self.prior_precision = delta_scale, prior_precision(delta_scale)
        self.device = products.device
        self.keys, self.null_weights, self.num_slots = keys, null_weights, keys.num_slots
        self.slots = keys.slots.to(self.device)
        self._counts = keys.counts().to(self.device, dtype)
        self.delta_half_count = delta_half_count
        self.slot_tau = slot_precision(self.prior_precision, self._counts, delta_half_count)
        self.weights: torch.Tensor | None = None      # ω (K,); reference/prompt: in prepare()
        self._factors: torch.Tensor | None = None     # f = ω/c per occurrence (None: all 1)
        self._unit_weights = False                     # ω = 1 everywhere (row multiplicity)
        if null_weights == "multiplicity":
            self._set_weights(self._counts)
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
            check_projection_memory(products.dim, self.num_slots, dtype, memory_budget_bytes)
            self.jacobian_t: torch.Tensor | None = None       # Aᵀ, (K, d), set by prepare
            self.basis = torch.zeros(self.num_slots, 0, dtype=dtype, device=self.device)
            self.coef = torch.zeros(1, 0, dtype=dtype, device=self.device, requires_grad=True)
            self.optimizer = self._optimizer_class((1, 0), **self._optimizer_args)
        else:
            self.raw = torch.zeros(self.num_slots, dtype=dtype, device=self.device,
                                   requires_grad=True)
            self.optimizer = self._optimizer_class((self.num_slots,), **self._optimizer_args)
        self.u = (torch.zeros(products.dim, dtype=dtype, device=self.device)
                  if mode == "global" else None)

    # ---- values ------------------------------------------------------------------------------

    def _from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.delta_cap is None else self.delta_cap * torch.tanh(raw)

    def values(self) -> torch.Tensor:
        """The offsets of all slots, ``(K,)``, detached."""
        with torch.no_grad():
            if self.mode == "projection":
                return self.basis @ self.coef[0]
            return self._from_raw(self.raw).clone()

    def table(self) -> torch.Tensor:
        """Every row's offsets, ``(n, 2)`` (chosen, rejected), detached: ``values()[slots]``."""
        return self.values()[self.slots]

    def _set_weights(self, weights: torch.Tensor) -> None:
        self.weights = weights.to(self.device, self.dtype)
        factors = self.weights / self._counts
        self._factors = None if torch.equal(factors, torch.ones_like(factors)) else factors
        self._unit_weights = bool(torch.all(self.weights == 1))

    def deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ_chosen, δ_rejected), each ``(B,)``, of dataset rows ``index`` ``(B,)``.

        Differentiable with respect to δ's own parameters (raw offsets or c).
        """
        slots = self.slots[self._check_index(index)]                    # (B, 2)
        if self.mode == "projection":
            rows = self.basis[slots] @ self.coef[0]                          # δ = Γc
        else:
            rows = self._from_raw(self.raw[slots])
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
        null_weights reference/prompt: first one no-grad pass for every slot's log π_ref.
        global/batch: the score norms of the first pairs, for ``aux/null_residual``'s scale
        (:mod:`.health`).
        """
        if isinstance(batches, Iterator) and self.weights is None:
            batches = list(batches)                    # two passes: weights, then u or A
        if not isinstance(batches, Iterator):          # a list or a DataLoader: re-iterable
            self._dataset_batches = batches
        elif self.recompute_every and self.mode == "global":
            raise ValueError("recompute_every > 0 needs re-iterable batches in prepare() "
                             "(a DataLoader or a list, not an iterator)")
        probe: list[Batch] = []                        # the first batches (iterators: peeked)
        if self.mode != "projection":
            probe, batches = take_probe_batches(batches)
        if self.weights is None:
            self._reference_weights(batches)
        if self.mode == "global":
            self.recompute_u(batches)
        elif self.mode == "projection":
            self._build_null_space(batches)            # and ā, exactly
        if self.mode != "projection":
            self._probe_column_scales(probe)

    def accumulate(self, batch: Batch) -> None:
        """Remember a micro-batch for this optimizer step's products (after its backward)."""
        self._batch_index(batch)
        self._pending.append(batch)

    def _reference_weights(self, batches: Iterable[Batch]) -> None:
        """ω of the reference/prompt weightings from log π_ref of every slot (one pass)."""
        logps = torch.full((self.num_slots,), torch.nan, dtype=torch.float64,
                           device=self.device)
        for batch in batches:
            slots = occurrence_slots(self.slots, self._batch_index(batch))
            logps[slots] = self.products.logps(batch).to(torch.float64)
        if bool(torch.isnan(logps).any()):
            raise ValueError(f"null_weights={self.null_weights!r}: "
                             f"{int(torch.isnan(logps).sum())} slots are missing from the "
                             "batches given to prepare()")
        weights = slot_weights(self.keys, self.null_weights, logps).to(self.device)
        if bool((weights == 0).any()):
            advice = ("use null_weights='prompt'" if self.null_weights == "reference" else
                      "they are far less likely under π_ref than another response to their "
                      "prompt")
            warnings.warn(f"null_weights={self.null_weights!r}: ω underflows to 0 for "
                          f"{int((weights == 0).sum())} of {weights.numel()} responses (π_ref "
                          f"of long sequences), which leaves their δ unconstrained; {advice}",
                          RuntimeWarning, stacklevel=3)
        self._set_weights(broadcast_(weights))     # every process: rank 0's ω, bit for bit

    def step(self, global_batch_size: int) -> dict[str, float]:
        """Add the penalty's δ-gradient, step δ's optimizer on the accumulated slots only,
        update u, zero δ's gradients and forget the micro-batches. ``global_batch_size`` is
        the number of examples this process accumulated for the step (the global batch G on
        one process; under torch.distributed the processes' counts are summed into G).
        Returns the metrics ``aux/penalty``, ``aux/delta_norm``, ``aux/null_residual``,
        ``aux/delta_margin`` (and ``aux/null_dim`` in projection mode, ``aux/prior`` with a
        prior: its full value (τ/2n)Σδ² before the step)."""
        if global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if not self._pending:
            raise ValueError("step() called with no accumulated micro-batch; call "
                             "accumulate(batch) after each micro-batch's backward")
        if self.weights is None:
            raise ValueError(f"null_weights={self.null_weights!r}: call prepare() first")
        batches, self._pending = self._pending, []
        indices = [self._batch_index(b) for b in batches]
        linears = [self._take_linearization(i) for i in indices]
        self._linearized = {}
        local_size = global_batch_size
        global_batch_size = int(all_reduce_(torch.tensor([local_size], dtype=torch.long,
                                                         device=self.device)).item())
        local_weight = local_size / global_batch_size       # this process's share of the mean
        occurrences = [occurrence_slots(self.slots, i) for i in indices]      # (2B,) each
        if self.mode != "projection" and self.column_scale is None:
            self._probe_column_scales(batches)                 # prepare() was not called
        if self.mode == "projection":
            metrics = self._step_projection(occurrences, global_batch_size, local_weight)
        else:
            metrics = self._step_rows(batches, occurrences, global_batch_size, local_weight,
                                      linears)
        self.num_steps += 1
        if (self.mode == "global" and self.recompute_every
                and self.num_steps % self.recompute_every == 0):
            self.recompute_u(self._dataset_batches)
        values = self.values()
        delta = values[self.slots]
        margins = torch.cat([delta[i, 0] - delta[i, 1] for i in indices])
        metrics["aux/delta_norm"] = float(values.norm())
        metrics["aux/delta_margin"] = float(margins.mean())
        if self.mode == "global":
            metrics["aux/null_residual"] = scaled_residual(self.u.norm(), values.norm(),
                                                           self.column_scale)
        self._last_metrics = metrics
        return dict(metrics)

    def metrics(self) -> dict[str, float]:
        """Metrics of the last step (empty before the first)."""
        return dict(self._last_metrics)

    # ---- the row update of the global and batch modes ----------------------------------------
    # Their penalties live in global_mode.py and batch_mode.py. Gradients are accumulated per occurrence straight into slot space (index_add over the
    # batch's slots); an occurrence of slot k carries f_k = ω_k/c_k (skipped when f = 1).

    def _step_rows(self, batches: list[Batch], occurrences: list[torch.Tensor],
                   global_batch_size: int, local_weight: float = 1.0,
                   linears: list[Linearization | None] | None = None) -> dict[str, float]:
        products = [BatchProducts(self.products, b, lin)
                    for b, lin in zip(batches, linears or [None] * len(batches))]
        with torch.no_grad():
            delta = self._from_raw(self.raw)
            penalty_grad = torch.zeros_like(delta)                   # ∂penalty/∂δ, (K,)
            if self.mode == "global":
                penalty = self._global_penalty_grad(products, occurrences, global_batch_size,
                                                    penalty_grad)
                metrics = {"aux/penalty": penalty}
            else:
                metrics = self._batch_penalty_grad(products, occurrences, global_batch_size,
                                                   delta, penalty_grad)
            if self.prior_precision:                                 # + (1/G)·τ·δ_k/c_k
                metrics["aux/prior"] = self._add_prior_grad(delta, occurrences,
                                                            global_batch_size, penalty_grad)
            raw_grad = self.raw.grad if self.raw.grad is not None else torch.zeros_like(delta)
            grad = raw_grad * local_weight + penalty_grad * self._ddelta_draw()  # cap's chain rule
            grad, slots = combine_row_gradients(grad.view(-1, 1), occurrences, self.num_slots)
            grad = grad.view(-1)
            old = delta[slots]
            self.optimizer.update(self.raw, slots, grad[slots])
            self.raw.grad = None
            if self.mode == "global":
                change = torch.zeros_like(delta)
                change[slots] = self._from_raw(self.raw[slots]) - old
                self._add_to_u(products, occurrences, change)        # u += A_B·Δδ_B
        return metrics

    def _ddelta_draw(self) -> torch.Tensor | float:
        if self.delta_cap is None:
            return 1.0
        return self.delta_cap * (1 - torch.tanh(self.raw.detach()) ** 2)

    def _per_occurrence(self, values: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return values if self._factors is None else values * self._factors[slots]
