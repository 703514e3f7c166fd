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

The function being differentiated (θ₀, the frozen rest, the tail) is
:class:`auxdpo.offsets.reference.ReferenceFunction`; the difference-quotient JVPs are
:mod:`auxdpo.offsets.differences`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
import torch.autograd.forward_ad as fwad

from auxdpo.offsets.differences import DIFFERENCE_METHODS, DIFFERENCES, DifferenceJVPMixin
from auxdpo.offsets.reference import ReferenceFunction, check_vector, eval_mode
from auxdpo.offsets.tail import CapturedInputs

__all__ = ["DIFFERENCE_METHODS", "JVP_METHODS", "Linearization", "ReferenceProducts",
           "eval_mode"]

JVP_METHODS = ("forward", "double-vjp", "finite-difference", "central-difference")


class ReferenceProducts(DifferenceJVPMixin, ReferenceFunction):
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
        jacobian_chunk_size: rows of A_Bᵀ computed at once by ``jacobian`` (None: all).
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
                 jacobian_chunk_size: int | None = None,
                 math_attention_vjp: bool = True, jvp_method: str = "forward",
                 truncate: bool = True) -> None:
        if jvp_method not in JVP_METHODS:
            raise ValueError(f"jvp_method must be one of {JVP_METHODS}, got {jvp_method!r}")
        super().__init__(model, param_names, average=average, snapshot=snapshot)
        self.jacobian_chunk_size = jacobian_chunk_size
        self.math_attention_vjp = math_attention_vjp
        self.jvp_method = jvp_method
        self._fd_gain: float | None = None      # last ‖A_Bᵀt‖/‖t‖ seen (difference methods)
        if jvp_method in DIFFERENCES and torch.finfo(self.dtype).bits < 32:
            raise ValueError(f"jvp_method {jvp_method!r} needs float32 or float64 parameters "
                             f"(got {self.dtype}): a difference quotient in 16-bit arithmetic "
                             "has no correct digits; use jvp_method='forward'")
        self._find_tail(truncate)

    # ---- products ------------------------------------------------------------------------

    def vjp(self, batch: Mapping[str, torch.Tensor], cotangent: torch.Tensor) -> torch.Tensor:
        """``A_B @ cotangent``: ``(N,) → (d,)``, one backward pass of Σ_j c_j log π_θ₀(a_j|s_j)."""
        return self._vjp_of(self._prepare(batch), cotangent)

    def jvp(self, batch: Mapping[str, torch.Tensor], tangent: torch.Tensor) -> torch.Tensor:
        """``A_Bᵀ @ tangent``: ``(d,) → (N,)``."""
        return self.logps_and_jvp(batch, tangent)[1]

    def logps_and_jvp(self, batch: Mapping[str, torch.Tensor], tangent: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π_θ₀(a_j|s_j), A_Bᵀ @ tangent)``, both ``(N,)``, from one product.

        ``jvp_method="forward"`` (default): one forward-mode pass with ``torch.func.jvp``
        (math attention). ``"double-vjp"``: with g(c) = A_B·c built by a backward pass that
        keeps its graph (g is linear in c), A_Bᵀt = ∂⟨g(c), t⟩/∂c, a second backward pass.
        The primal comes for free, so a caller that needs the reference log-probs and A_Bᵀu
        for the same batch (u fixed within a step) can take both from one call.
        """
        return self._jvp_of(self._prepare(batch), tangent)

    def linearize(self, batch: Mapping[str, torch.Tensor], tangent: torch.Tensor | None = None,
                  *, keep_graph: bool = False, captured: CapturedInputs | None = None
                  ) -> "Linearization":
        """One pass over ``batch`` giving its reference log-probs and, if ``tangent`` (d,) is
        given, A_Bᵀ·tangent; the returned object computes A_B·c and A_Bᵀ·t for the same batch
        later without running the frozen prefix again (it keeps the tail's input).

        ``keep_graph=True`` keeps the tail's autograd graph from this pass (forward-mode
        tangents ride on it), so that the first ``vjp`` is a backward pass only; it holds the
        tail's activations until then. ``captured``: the tail's inputs recorded from the
        policy's forward on the same batch (:meth:`TailPlan.recording`), so that the frozen
        prefix does not run again (see :meth:`_logps_fn`).
        """
        fn = self._prepare(batch, captured)
        difference = self.jvp_method in DIFFERENCES
        if not keep_graph:
            if tangent is None or difference:
                # Difference methods: the primal is the plain forward they difference against.
                with torch.no_grad(), self._context(math_attention=not difference):
                    logps = fn(*self.reference.values())
                directional = None if tangent is None else self._difference(fn, tangent, logps)
                return Linearization(self, fn, logps, directional)
            return Linearization(self, fn, *self._jvp_of(fn, tangent))
        leaves = [t.detach().requires_grad_(True) for t in self.reference.values()]
        directional = None
        # A difference quotient must see the same kernels at both points: default kernels.
        use_math = not difference
        with self._context(math_attention=use_math), torch.enable_grad():
            if tangent is None or difference:
                logps = fn(*leaves)
            else:
                with fwad.dual_level():
                    duals = [fwad.make_dual(leaf, t) for leaf, t in
                             zip(leaves, self._tangents(tangent, leaves))]
                    logps, directional = fwad.unpack_dual(fn(*duals))
                    directional = directional.detach().clone()
        if difference and tangent is not None:
            directional = self._difference(fn, tangent, logps.detach())
        return Linearization(self, fn, logps, directional, graph=(logps, leaves))


    # ---- products from a prepared log-prob function -------------------------------------

    def _vjp_of(self, fn: Callable, cotangent: torch.Tensor, graph=None) -> torch.Tensor:
        if graph is None:
            theta = [t.detach().requires_grad_(True) for t in self.reference.values()]
            with self._context(self.math_attention_vjp), torch.enable_grad():
                logps = fn(*theta)
        else:
            logps, theta = graph
        check_vector("cotangent", cotangent, logps.shape[0])
        grads = torch.autograd.grad(logps, theta, grad_outputs=cotangent.to(logps),
                                    allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, theta)]
        return self.flatten(grads)

    def _jvp_of(self, fn: Callable, tangent: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        theta = tuple(self.reference.values())
        if self.jvp_method in DIFFERENCES:
            with torch.no_grad(), self._context(math_attention=False):
                logps = fn(*theta)
            return logps, self._difference(fn, tangent, logps)
        tangents = self._tangents(tangent, theta)
        if self.jvp_method == "forward":
            # Dual tensors directly: the same products as torch.func.jvp, with less overhead
            # (≈ 35% less time on the benchmarks' tiny models).
            with self._context(math_attention=True), torch.no_grad(), fwad.dual_level():
                duals = [fwad.make_dual(t, g) for t, g in zip(theta, tangents)]
                logps, directional = fwad.unpack_dual(fn(*duals))
                if directional is None:           # the log-probs do not depend on θ
                    return logps.clone(), torch.zeros_like(logps)
                return logps.clone(), directional.clone()
        leaves = [t.detach().requires_grad_(True) for t in theta]
        with self._context(self.math_attention_vjp), torch.enable_grad():
            logps = fn(*leaves)
            dummy = torch.zeros_like(logps, requires_grad=True)
            grads = torch.autograd.grad(logps, leaves, grad_outputs=dummy, create_graph=True,
                                        allow_unused=True)
            pairs = [(g, t) for g, t in zip(grads, tangents) if g is not None and g.requires_grad]
            if not pairs:
                return logps.detach(), torch.zeros_like(logps.detach())
            inner = sum((g * t).sum() for g, t in pairs)                   # ⟨A_B·c, t⟩
            (directional,) = torch.autograd.grad(inner, dummy)
        return logps.detach(), directional.detach()


    def jacobian(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``A_Bᵀ`` explicitly: ``(N, d)``, row j = ∇_θ log π_θ₀(a_j|s_j).

        Batched with ``torch.func.jacrev`` (a vmap over the backward pass, math attention);
        falls back to N backward passes, with a warning, for models vmap cannot batch.
        """
        theta = tuple(self.reference.values())
        fn = self._prepare(batch)
        try:
            with self._context(math_attention=True):
                jac = torch.func.jacrev(fn, argnums=tuple(range(len(theta))),
                                        chunk_size=self.jacobian_chunk_size)(*theta)
            return torch.cat([j.reshape(j.shape[0], -1) for j in jac], dim=1)
        except (RuntimeError, NotImplementedError) as error:
            warnings.warn(f"batched Jacobian failed ({error}); using one backward pass per "
                          "response instead", RuntimeWarning, stacklevel=2)
            return self._jacobian_loop(batch)

    def _jacobian_loop(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Reference implementation of :meth:`jacobian`: one backward pass per row."""
        theta = [t.detach().requires_grad_(True) for t in self.reference.values()]
        rows = []
        with self._context(math_attention=True), torch.enable_grad():
            logps = self._logps_fn(batch)(*theta)
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
        return self.products._vjp_of(self._fn, cotangent, graph)

    def jvp(self, tangent: torch.Tensor) -> torch.Tensor:
        """``A_Bᵀ @ tangent`` ``(N,)`` (a fresh pass through the tail; a difference method
        reuses this batch's reference log-probs as its base point)."""
        if self.products.jvp_method in DIFFERENCES:
            return self.products._difference(self._fn, tangent, self.logps)
        return self.products._jvp_of(self._fn, tangent)[1]

    def release(self) -> None:
        """Drop the kept graph (if any) without using it."""
        self._graph = None
