"""AuxDPO's auxiliary offsets δ (paper Sec. 4.2 and 7.2): storage over slots and its lifecycle.

δ ∈ R^K holds one offset per *slot*, in reward units: the loss is −log σ(β·h + δ_w − δ_l)
(:func:`auxdpo.losses.auxdpo_loss`). A per-row map ``slots`` ``(n, 2)`` (column 0 chosen,
column 1 rejected; :mod:`auxdpo.offsets.keys`) gives each row's two slots: row keying has
K = 2n slots ordered (δ_{0,w}, δ_{0,l}, δ_{1,w}, ...), response keying one slot per unique
(prompt, response). A = [ω_k ∇log π_θ₀(a_k|s_k)]_k is d × K, with the constraint's slot
weights ω (multiplicity: ω_k = c_k, the slot's occurrences; ω = 1 under row keying). Each
occurrence of slot k in a minibatch carries f_k = ω_k / c_k, so that one pass over the data
adds up to A·δ.

Modes (see docs/offsets.md for the derivations; each mode is a constraint object in its own
module, which :class:`AuxOffsets` holds and calls through one small interface,
:mod:`auxdpo.offsets.constraints`):

``global``      the paper's empirical loss (Sec. 4.2): (1/n)Σℓ_i + λ‖Aδ/(2n)‖² over the whole
                dataset, kept exact with u = A·δ: the batch's penalty gradient is
                2λ/(2n)²·A_Bᵀu (one JVP), then u += A_B·Δδ_B (one VJP). Lazy row-wise Adam,
                so that only the batch's rows of δ move. (:mod:`.global_mode`, :mod:`.rows`)
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

Composition: :class:`AuxOffsets` owns the slot map, ω, the pending micro-batches and the
lifecycle, and holds its parts (the package's docstring, :mod:`auxdpo.offsets`, has the map).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from auxdpo.offsets.batch_mode import BatchConstraint
from auxdpo.offsets.collectives import all_reduce_, check_engine_support
from auxdpo.offsets.constraints import (
    MODES,
    StepInputs,
    check_projection_memory,
    validate_offsets_config,
)
from auxdpo.offsets.global_mode import GlobalConstraint
from auxdpo.offsets.health import ColumnScales, scaled_residual, take_probe_batches
from auxdpo.offsets.keys import OffsetKeys, SlotWeights, row_keys
from auxdpo.offsets.micro_batch import (
    Batch,
    BatchProducts,
    LinearizationQueue,
    batch_index,
    check_index,
    occurrence_slots,
)
from auxdpo.offsets.prior import OffsetPrior
from auxdpo.offsets.products import ReferenceProducts
from auxdpo.offsets.projection import ProjectionConstraint
from auxdpo.offsets.rows import RowOffsets, row_optimizer

__all__ = ["MODES", "AuxOffsets"]

Constraint = GlobalConstraint | BatchConstraint | ProjectionConstraint


class AuxOffsets:
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
        if isinstance(num_examples, int) and num_examples > 0 and keys is None:
            keys = row_keys(num_examples)
        validate_offsets_config(num_examples, mode, lambda_null, lambda_amp, amp_sign,
                                delta_cap, recompute_every, keys, null_weights)
        check_engine_support(mode, getattr(products, "model", None))
        if torch.finfo(dtype).bits < 32:
            dtype = torch.float32   # u accumulates many small updates: never in bf16/fp16
        make_optimizer = row_optimizer(optimizer, lr=delta_lr, betas=betas, eps=eps,
                                       dtype=dtype, device=products.device)
        self.num_examples, self.products, self.mode = num_examples, products, mode
        self.lambda_null, self.lambda_amp, self.amp_sign = lambda_null, lambda_amp, amp_sign
        self.delta_cap, self.recompute_every, self.dtype = delta_cap, recompute_every, dtype
        self.memory_budget_bytes = memory_budget_bytes
        self.delta_scale, self.delta_half_count = delta_scale, delta_half_count
        self.device = products.device
        self.keys, self.null_weights, self.num_slots = keys, null_weights, keys.num_slots
        self.slots = keys.slots.to(self.device)
        counts = keys.counts().to(self.device, dtype)
        self.slot_weights = SlotWeights(counts)       # ω; reference/prompt: set in prepare()
        if null_weights == "multiplicity":
            self.slot_weights.set(counts)
        self.prior = OffsetPrior(delta_scale, delta_half_count, counts, self.slots)
        self.health = ColumnScales()
        self.linearizations = LinearizationQueue()    # the fused pass's, until step()
        self.keep_reference_graph = keep_reference_graph
        self.num_steps = 0
        self._pending: list[Batch] = []
        self._dataset_batches: Iterable[Batch] | None = None
        self._last_metrics: dict[str, float] = {}
        if mode == "projection":
            check_projection_memory(products.dim, self.num_slots, dtype, memory_budget_bytes)
            self.constraint: Constraint = ProjectionConstraint(
                products, self.slots, self.slot_weights, self.health, make_optimizer,
                self.num_slots, dtype)
        else:
            rows = RowOffsets(self.num_slots, delta_cap, make_optimizer, dtype, self.device)
            if mode == "global":
                self.constraint = GlobalConstraint(
                    rows, products, self.slots, self.slot_weights, lambda_null=lambda_null,
                    recompute_every=recompute_every, dtype=dtype)
            else:
                self.constraint = BatchConstraint(
                    rows, self.slot_weights, self.health, lambda_null=lambda_null,
                    lambda_amp=lambda_amp, amp_sign=amp_sign, dtype=dtype)

    # ---- the parts' state under the public names (AttributeError where a mode has none) ----

    weights = property(lambda self: self.slot_weights.weights,
                       doc="ω ``(K,)`` (None until prepare() for the reference/prompt weightings)")
    optimizer = property(lambda self: self.constraint.optimizer,
                         doc="δ's (or c's) lazy row-wise optimizer")
    raw = property(lambda self: self.constraint.row_offsets.raw,
                   doc="global/batch: the trained parameter ``(K,)``; δ = raw or cap·tanh(raw)")
    u = property(lambda self: getattr(self.constraint, "u", None),
                 doc="global: u = A·δ ``(d,)``; None in the other modes")
    basis = property(lambda self: self.constraint.basis, doc="projection: Γ ``(K, K − rank)``")
    coef = property(lambda self: self.constraint.coef,
                    doc="projection: c ``(1, K − rank)``, the trained parameter (δ = Γc)")
    jacobian_t = property(lambda self: self.constraint.jacobian_t,
                          doc="projection: Aᵀ ``(K, d)`` (None before prepare())")
    rank = property(lambda self: self.constraint.rank,
                    doc="projection: rank(A) (None before prepare())")
    prior_precision = property(lambda self: self.prior.precision,
                               doc="τ = 1/σ² of the prior (0.0 without one)")
    slot_tau = property(lambda self: self.prior.slot_tau,
                        doc="τ, or τ_k ``(K,)`` with ``delta_half_count``")
    column_scale = property(lambda self: self.health.column_scale,
                            doc="ā (auxdpo.offsets.health; None until measured)")
    occurrence_scale = property(lambda self: self.health.occurrence_scale,
                                doc="ā_B (global/batch; None until measured)")

    def prior_total(self, values: torch.Tensor) -> float:
        """The prior's full value (1/2n)Σ_k τ_k δ_k² at offsets ``values`` ``(K,)``."""
        return self.prior.total(values)

    def prior_shares(self, index: torch.Tensor, chosen: torch.Tensor,
                     rejected: torch.Tensor) -> torch.Tensor:
        """``(B,)`` each row's share (τ/2)·(δ_w²/c_w + δ_l²/c_l) of the prior, for dataset rows
        ``index`` and their offsets ``chosen``, ``rejected`` in reward units (differentiable
        in them). The mean over a batch estimates the prior's value without bias."""
        return self.prior.shares(self._check_index(index), chosen, rejected)

    # ---- values ------------------------------------------------------------------------------

    def values(self) -> torch.Tensor:
        """The offsets of all slots, ``(K,)``, detached."""
        return self.constraint.values()

    def table(self) -> torch.Tensor:
        """Every row's offsets, ``(n, 2)`` (chosen, rejected), detached: ``values()[slots]``."""
        return self.values()[self.slots]

    def deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ_chosen, δ_rejected), each ``(B,)``, of dataset rows ``index`` ``(B,)``,
        differentiable with respect to δ's own parameters (raw offsets or c)."""
        rows = self.constraint.rows(self.slots[self._check_index(index)])      # (B, 2)
        return rows[:, 0], rows[:, 1]

    def _check_index(self, index: torch.Tensor) -> torch.Tensor:
        return check_index(index, self.num_examples, self.device)

    def _batch_index(self, batch: Batch) -> torch.Tensor:
        return batch_index(batch, self.num_examples, self.device)

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
        if not self.constraint.exact_scale:
            probe, batches = take_probe_batches(batches)
        if self.weights is None:
            self._reference_weights(batches)
        self.constraint.prepare(batches)               # u = A·δ, or Aᵀ, Γ and ā
        if not self.constraint.exact_scale:
            self._probe_column_scales(probe)

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
        (:meth:`auxdpo.offsets.tail.TailPlan.recording`); the frozen prefix then does not run
        again.
        """
        index = self._batch_index(batch)
        constraint = self.constraint
        keep = self.keep_reference_graph and constraint.fuses
        linear = self.products.linearize(batch, constraint.tangent(), keep_graph=keep,
                                         captured=captured)
        if constraint.fuses:
            self.linearizations.file(index, linear, constraint.version)
        return linear.logps

    def recompute_u(self, batches: Iterable[Batch] | None) -> None:
        """u = A·δ from scratch (global mode, :meth:`GlobalConstraint.recompute_u`: ``batches``
        cover every row whose δ ≠ 0); a no-op in the other modes."""
        if self.mode == "global":
            self.constraint.recompute_u(batches)

    def _reference_weights(self, batches: Iterable[Batch]) -> None:
        """ω of the reference/prompt weightings from log π_ref of every slot (one pass)."""
        logps = torch.full((self.num_slots,), torch.nan, dtype=torch.float64,
                           device=self.device)
        for batch in batches:
            slots = occurrence_slots(self.slots, self._batch_index(batch))
            logps[slots] = self.products.logps(batch).to(torch.float64)
        self.slot_weights.measure(self.keys, self.null_weights, logps)

    def _probe_column_scales(self, batches: list[Batch]) -> None:
        occurrences = [occurrence_slots(self.slots, self._batch_index(b)) for b in batches]
        self.health.probe(self.products, batches, occurrences, self.weights,
                          self.slot_weights.counts)

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
        constraint = self.constraint
        batches, self._pending = self._pending, []
        indices = [self._batch_index(b) for b in batches]
        linears = [self.linearizations.take(i, constraint.version) for i in indices]
        self.linearizations.clear()
        local_size = global_batch_size
        global_batch_size = int(all_reduce_(torch.tensor([local_size], dtype=torch.long,
                                                         device=self.device)).item())
        occurrences = [occurrence_slots(self.slots, i) for i in indices]      # (2B,) each
        if not constraint.exact_scale and self.health.column_scale is None:
            self._probe_column_scales(batches)                 # prepare() was not called
        inputs = StepInputs(
            products=[BatchProducts(self.products, b, lin) for b, lin in zip(batches, linears)],
            occurrences=occurrences, global_batch_size=global_batch_size,
            local_weight=local_size / global_batch_size,      # this process's share of the mean
            prior=self.prior)
        metrics = constraint.step(inputs)
        self.num_steps += 1
        constraint.after_step(self.num_steps, self._dataset_batches)
        values = self.values()
        delta = values[self.slots]
        margins = torch.cat([delta[i, 0] - delta[i, 1] for i in indices])
        metrics["aux/delta_norm"] = float(values.norm())
        metrics["aux/delta_margin"] = float(margins.mean())
        image = constraint.null_image()                        # global: ‖u‖ = ‖Aδ‖
        if image is not None:
            metrics["aux/null_residual"] = scaled_residual(image, values.norm(),
                                                           self.health.column_scale)
        self._last_metrics = metrics
        return dict(metrics)

    def metrics(self) -> dict[str, float]:
        """Metrics of the last step (empty before the first)."""
        return dict(self._last_metrics)

    # ---- checkpoint state --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """δ's parameters, optimizer state, u (global), Γ (projection), the step count, the
        keys (keying, weighting, slot map, ω), the prior's σ and the difference JVP's
        step-size state."""
        state = {"mode": self.mode, "num_examples": self.num_examples,
                 "num_steps": self.num_steps, "keying": self.keys.keying,
                 "null_weights": self.null_weights, "slots": self.slots.clone(),
                 **self.prior.state_dict()}
        if self.weights is not None:
            state["weights"] = self.weights.clone()
        state.update(self.constraint.state_dict())   # optimizer; raw (and u), or coef, basis
        # The difference JVP's step size follows ‖A_Bᵀt‖/‖t‖ of the previous call; restoring
        # it makes a resumed run take the same steps as an uninterrupted one.
        state["jvp_gain"] = self.products.difference_gain
        return state

    def load_state_dict(self, state: dict, *, recompute: bool | None = None) -> None:
        """Restore :meth:`state_dict`. In global mode u is then recomputed from scratch when
        ``recompute`` is True, or None and :meth:`prepare` was given re-iterable batches.
        The keys must match; ω is taken from the state (exact resume)."""
        for key, expected in (("mode", self.mode), ("num_examples", self.num_examples),
                              ("keying", self.keys.keying),
                              ("null_weights", self.null_weights)):
            if state.get(key) != expected:
                raise ValueError(f"state {key}={state.get(key)!r} does not match {expected!r}")
        self.prior.load_state_dict(state)                    # warns if σ or c½ changed
        if not torch.equal(state["slots"].cpu(), self.slots.cpu()):
            raise ValueError("state's slot map differs from this data's: the checkpoint's "
                             "offsets key other rows or responses (different data, order or "
                             "tokenizer)")
        self.slot_weights.load_state_dict(state, self.null_weights)
        self._pending = []
        self.linearizations.clear()
        self.num_steps = int(state["num_steps"])
        self.constraint.load_state_dict(state)
        if "jvp_gain" in state:
            self.products.difference_gain = state["jvp_gain"]
        if recompute or (recompute is None and self._dataset_batches is not None):
            self.recompute_u(self._dataset_batches)
