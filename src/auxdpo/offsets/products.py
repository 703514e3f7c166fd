"""Products with the reference Jacobian A_B, without per-example gradients.

For a batch of N responses (s_j, a_j), A_B is the ``d × N`` matrix whose column j is
∇_θ log π_θ₀(a_j|s_j): the score of response j at the reference point θ₀, over the d
trainable parameters (paper Sec. 4.2: A_{θ₀}δ = E[δ(s,a)∇log π_θ₀(a|s)]). AuxDPO's penalties
only ever need

* ``A_B·c`` — the gradient of Σ_j c_j log π_θ₀(a_j|s_j): one backward pass (a VJP);
* ``A_Bᵀ·t`` — the directional derivatives of the N log-probs along t: one forward-mode
  pass (a JVP);

so the per-example gradient loop (N backward passes) is needed only by ``jacobian``, used for
the exact ``projection`` mode and in tests.

The reference point is a snapshot of the trainable tensors taken at construction; every
product runs the model through ``torch.func.functional_call`` with the snapshot substituted,
so the model's own (training) values, its ``.grad`` and its autograd graph are never touched.
For full or partial fine-tuning and for LoRA alike this is exactly θ₀ (for LoRA the trainable
tensors are the adapters, with B = 0 at initialisation).

Dropout is off in every product: the model is put in eval mode and each module's mode is
restored afterwards. The JVP and the Jacobian run attention on PyTorch's math SDPA backend:
the fused SDPA kernels (CPU flash) have no forward-mode AD in torch 2.13 (NotImplementedError)
and no batching rule for their backward (vmap falls back to a slow loop); the math backend is
a composition of ordinary differentiable ops. The VJP is an ordinary backward pass; by default it uses the math backend
too (``math_attention_vjp=True``), so that the three products see the same A_B to the last
bit of the kernels, and because the fused CPU kernel's backward was slower in
benchmarks/bench_penalty.py. On a GPU with long sequences pass ``False`` to keep the fused
kernels' memory savings for the VJP (the JVP has no such choice).

:class:`ReferenceProducts` is composed of two parts: the function being differentiated (θ₀,
the frozen rest, the tail; :class:`auxdpo.offsets.reference.ReferenceFunction`) and a JVP
strategy object per ``jvp_method`` (:mod:`auxdpo.offsets.jvp` for the exact ones,
:class:`auxdpo.offsets.differences.DifferenceJVP` for the difference quotients). The VJP, the
Jacobian and the fused linearization are its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch

from auxdpo.offsets.differences import DIFFERENCE_METHODS
from auxdpo.offsets.jvp import JVP_METHODS, jvp_strategy
from auxdpo.offsets.reference import ReferenceFunction, check_vector, eval_mode
from auxdpo.offsets.tail import CapturedInputs, TailPlan

__all__ = ["DIFFERENCE_METHODS", "JVP_METHODS", "Linearization", "ReferenceProducts",
           "sequence_batches",
           "eval_mode"]

Batch = Mapping[str, torch.Tensor]


def sequence_batches(batch: Batch) -> list[dict]:
    """A batch of N sequences as N one-sequence batches, in order: every tensor whose leading
    size is N (the largest leading size in the batch: ``input_ids``, masks) is cut to one row;
    anything else (per-pair fields, scalars) is shared."""
    sizes = [int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim]
    count = max(sizes, default=0)
    return [{key: value[j:j + 1] if isinstance(value, torch.Tensor) and value.ndim
             and value.shape[0] == count else value for key, value in batch.items()}
            for j in range(count)]


class ReferenceProducts:
    """Products with A_B, the ``d × N`` matrix whose column j is ∇_θ log π_θ₀(a_j|s_j).

    θ are the trainable parameters (``d`` scalars in all) at the reference point θ₀ (their
    values at construction, snapshot taken here); the rest of the model is frozen at its
    current values. Batches are TRL preference batches (``N = 2B`` rows, see
    :mod:`auxdpo.logps`); a vector over the batch's responses is ``(N,)`` in row order.

    Args:
        model: the policy (a Hugging Face causal LM, plain or PEFT-wrapped).
        param_names: names (as in ``model.named_parameters()``) of the trainable tensors;
            default: every parameter with ``requires_grad``.
        average: mean log-probs over completion tokens (IPO) instead of sums.
        snapshot: copy θ₀ (default). ``False`` reads the tensors live from ``model``; only for
            a model that stays at θ₀, e.g. a frozen reference copy (saves one copy of θ).
        math_attention_vjp: run the VJP with math-backend attention (see the module notes).
        jvp_method: how A_Bᵀt is computed (see :meth:`logps_and_jvp`): ``"forward"``
            (default; exact, one forward-mode pass), ``"double-vjp"`` (exact, two backward
            passes), ``"finite-difference"`` (one extra plain forward at θ₀ + s·t, relative
            error ≈ √eps: 1e-3 in float32, up to 3e-2 at a LoRA θ₀; 1e-7 in float64) or
            ``"central-difference"`` (two extra forwards, 1e-4 to 1e-3 / 1e-8). The difference
            methods need float32 or float64 and run the fused attention kernels.
        truncate: run the products through the trainable tail only (:mod:`auxdpo.offsets.tail`)
            when the model's structure is recognised and every trainable tensor lies in the
            last blocks, final norm or head; checked against the full pass on the first batch.
    """

    def __init__(self, model: torch.nn.Module, param_names: list[str] | None = None, *,
                 average: bool = False, snapshot: bool = True,
                 math_attention_vjp: bool = True, jvp_method: str = "forward",
                 truncate: bool = True) -> None:
        if jvp_method not in JVP_METHODS:
            raise ValueError(f"jvp_method must be one of {JVP_METHODS}, got {jvp_method!r}")
        self.function = ReferenceFunction(model, param_names, average=average,
                                          snapshot=snapshot, truncate=truncate)
        self.math_attention_vjp = math_attention_vjp
        self.jvp_method = jvp_method
        self.strategy = jvp_strategy(jvp_method, self.function, math_attention_vjp)

    # ---- the reference function's description --------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        return self.function.model

    @property
    def param_names(self) -> list[str]:
        return self.function.param_names

    @property
    def average(self) -> bool:
        return self.function.average

    @property
    def dim(self) -> int:
        """d, the number of trainable scalars."""
        return self.function.dim

    @property
    def reference(self) -> dict[str, torch.Tensor]:
        """θ₀ as ``{name: tensor}`` (detached)."""
        return self.function.reference

    @property
    def dtype(self) -> torch.dtype:
        return self.function.dtype

    @property
    def device(self) -> torch.device:
        return self.function.device

    @property
    def truncated(self) -> bool:
        """True when the products run through the trainable tail only."""
        return self.function.truncated

    @property
    def tail_plan(self) -> TailPlan | None:
        """The trainable tail the products run through, or None (full model pass)."""
        return self.function.tail_plan

    @property
    def share_prefix(self) -> bool:
        """Whether tail inputs captured from the policy's forward are accepted (turns False
        when the first such capture differs from the products' own)."""
        return self.function.share_prefix

    @share_prefix.setter
    def share_prefix(self, value: bool) -> None:
        self.function.share_prefix = bool(value)

    @property
    def difference_gain(self) -> float | None:
        """The difference JVP's step-size state (last ‖A_Bᵀt‖/‖t‖; None before the first
        call, and always for the exact methods). Saved in checkpoints so that a resumed run
        takes the same steps."""
        return self.strategy.gain

    @difference_gain.setter
    def difference_gain(self, value: float | None) -> None:
        if self.strategy.reuses_primal:                 # only the difference quotients keep it
            self.strategy.gain = None if value is None else float(value)

    def flatten(self, tensors: list[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors (in ``param_names`` order) into a ``(d,)`` vector."""
        return self.function.flatten(tensors)

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a ``(d,)`` vector into tensors shaped like the trainable parameters."""
        return self.function.unflatten(vector)

    def logps(self, batch: Batch) -> torch.Tensor:
        """``(N,)`` reference log-probs log π_θ₀(a_j|s_j) (no graph, dropout off)."""
        return self.function.logps(batch)

    def logps_at(self, batch: Batch, step: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log-probs at θ₀ + ``step`` (a ``(d,)`` vector over the trainable tensors;
        the rest of the model at θ₀), no graph: the exact counterpart of
        ``logps(batch) + A_Bᵀ·step``."""
        theta = [t + s.to(t) for t, s in zip(self.reference.values(), self.unflatten(step))]
        fn = self.function.prepare(batch)
        with torch.no_grad(), self.function.context(math_attention=False):
            return fn(*theta)

    # ---- products ------------------------------------------------------------------------

    def vjp(self, batch: Batch, cotangent: torch.Tensor) -> torch.Tensor:
        """``A_B @ cotangent``: ``(N,) → (d,)``, one backward pass of Σ_j c_j log π_θ₀(a_j|s_j)."""
        return self.vjp_of(self.function.prepare(batch), cotangent)

    def jvp(self, batch: Batch, tangent: torch.Tensor) -> torch.Tensor:
        """``A_Bᵀ @ tangent``: ``(d,) → (N,)``."""
        return self.logps_and_jvp(batch, tangent)[1]

    def logps_and_jvp(self, batch: Batch, tangent: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π_θ₀(a_j|s_j), A_Bᵀ @ tangent)``, both ``(N,)``, from one product.

        ``jvp_method="forward"`` (default): one forward-mode pass (math attention).
        ``"double-vjp"``: with g(c) = A_B·c built by a backward pass that keeps its graph (g is
        linear in c), A_Bᵀt = ∂⟨g(c), t⟩/∂c, a second backward pass. The difference methods:
        a plain forward and a quotient around it (:mod:`auxdpo.offsets.differences`).
        The primal comes for free, so a caller that needs the reference log-probs and A_Bᵀu
        for the same batch (u fixed within a step) can take both from one call.
        """
        return self.strategy.logps_and_jvp(self.function.prepare(batch), tangent)

    def linearize(self, batch: Batch, tangent: torch.Tensor | None = None,
                  *, keep_graph: bool = False, captured: CapturedInputs | None = None
                  ) -> Linearization:
        """One pass over ``batch`` giving its reference log-probs and, if ``tangent`` (d,) is
        given, A_Bᵀ·tangent; the returned object computes A_B·c and A_Bᵀ·t for the same batch
        later without running the frozen prefix again (it keeps the tail's input).

        ``keep_graph=True`` keeps the tail's autograd graph from this pass (forward-mode
        tangents ride on it), so that the first ``vjp`` is a backward pass only; it holds the
        tail's activations until then. ``captured``: the tail's inputs recorded from the
        policy's forward on the same batch (:meth:`TailPlan.recording`), so that the frozen
        prefix does not run again (see :meth:`ReferenceFunction.logps_fn`).
        """
        fn = self.function.prepare(batch, captured)
        strategy = self.strategy
        if keep_graph:
            leaves = [t.detach().requires_grad_(True) for t in self.reference.values()]
            logps, directional = strategy.linearize_graph(fn, leaves, tangent)
            return Linearization(self, fn, logps, directional, graph=(logps, leaves))
        if tangent is not None and not strategy.reuses_primal:
            return Linearization(self, fn, *strategy.logps_and_jvp(fn, tangent))
        # No tangent, or a difference quotient around the plain forward it differences against.
        with torch.no_grad(), self.function.context(math_attention=strategy.math_attention):
            logps = fn(*self.reference.values())
        directional = None if tangent is None else strategy.jvp_at(fn, tangent, logps)
        return Linearization(self, fn, logps, directional)

    def vjp_of(self, fn: Callable, cotangent: torch.Tensor, graph=None) -> torch.Tensor:
        """``A_B @ cotangent`` of a prepared log-prob function ``fn``
        (:meth:`ReferenceFunction.prepare`); ``graph`` ``(logps, leaves)``: a kept graph to
        run the backward pass on instead of a new forward."""
        if graph is None:
            theta = [t.detach().requires_grad_(True) for t in self.reference.values()]
            with self.function.context(self.math_attention_vjp), torch.enable_grad():
                logps = fn(*theta)
        else:
            logps, theta = graph
        check_vector("cotangent", cotangent, logps.shape[0])
        grads = torch.autograd.grad(logps, theta, grad_outputs=cotangent.to(logps),
                                    allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, theta)]
        return self.flatten(grads)

    def jacobian(self, batch: Batch, step: torch.Tensor | None = None,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
        """``A_Bᵀ`` explicitly: ``(N, d)``, row j = ∇_θ log π_θ₀(a_j|s_j); with ``step`` the
        same at θ₀ + step (how far the scores move along a step); with ``rows`` (indices into
        the batch's N sequences) only those rows, in that order, and only they are computed.

        One sequence at a time (:func:`sequence_batches`; ``torch.func.jacrev``, math
        attention): a vmap of the backward pass over the N rows of the whole batch would run N
        backward passes of all N rows (N² row passes instead of N).
        Falls back to one backward pass per response of the whole batch, with a warning, for
        models ``torch.func`` cannot differentiate.
        """
        theta = tuple(self.reference.values())
        if step is not None:
            theta = tuple(t + s.to(t) for t, s in zip(theta, self.unflatten(step)))
        sequences = sequence_batches(batch)
        wanted = range(len(sequences)) if rows is None else [int(j) for j in rows]
        out = []
        try:
            for j in wanted:
                fn = self.function.prepare(sequences[j])
                with self.function.context(math_attention=True):
                    jac = torch.func.jacrev(fn, argnums=tuple(range(len(theta))))(*theta)
                out.append(torch.cat([part.reshape(part.shape[0], -1) for part in jac], dim=1))
            return torch.cat(out) if out else torch.zeros(0, self.dim, dtype=self.dtype,
                                                          device=self.device)
        except (RuntimeError, NotImplementedError) as error:
            warnings.warn(f"batched Jacobian failed ({error}); using one backward pass per "
                          "response instead", RuntimeWarning, stacklevel=2)
            every = self._jacobian_loop(batch, theta)
            return every if rows is None else every[torch.as_tensor(rows).to(every.device)]

    def _jacobian_loop(self, batch: Batch, point: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:meth:`jacobian` by one backward pass per row, at ``point``."""
        theta = [t.detach().requires_grad_(True) for t in point]
        rows = []
        with self.function.context(math_attention=True), torch.enable_grad():
            logps = self.function.logps_fn(batch)(*theta)
            for j in range(logps.shape[0]):
                grads = torch.autograd.grad(logps[j], theta, retain_graph=True,
                                            allow_unused=True)
                rows.append(self.flatten(
                    [torch.zeros_like(t) if g is None else g for g, t in zip(grads, theta)]))
        return torch.stack(rows)


class Linearization:
    """One batch's reference log-probs and products with its A_B, sharing one prefix pass.

    Made by :meth:`ReferenceProducts.linearize`. ``logps`` ``(N,)`` are log π_θ₀(a_j|s_j)
    (detached); ``directional`` ``(N,)`` is A_Bᵀt for the tangent given there (or None).
    """

    def __init__(self, products: ReferenceProducts, fn: Callable, logps: torch.Tensor,
                 directional: torch.Tensor | None, graph=None) -> None:
        self.products, self._fn, self._graph = products, fn, graph
        self.logps = logps.detach()
        self.directional = directional

    def vjp(self, cotangent: torch.Tensor) -> torch.Tensor:
        """``A_B @ cotangent`` ``(d,)``; the first call uses the kept graph, if any."""
        graph, self._graph = self._graph, None
        return self.products.vjp_of(self._fn, cotangent, graph)

    def jvp(self, tangent: torch.Tensor) -> torch.Tensor:
        """``A_Bᵀ @ tangent`` ``(N,)`` (a fresh pass through the tail; a difference method
        reuses this batch's reference log-probs as its base point)."""
        return self.products.strategy.jvp_at(self._fn, tangent, self.logps)

    @property
    def holds_graph(self) -> bool:
        """Whether the pass's autograd graph is still kept (until the first :meth:`vjp` or
        :meth:`release`)."""
        return self._graph is not None

    def release(self) -> None:
        """Drop the kept graph (if any) without using it."""
        self._graph = None
