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
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.autograd.forward_ad as fwad
from torch.nn.attention import SDPBackend, sdpa_kernel

from auxdpo.logps import model_sequence_logps
from auxdpo.tail import CapturedInputs, TailPlan, find_tail, same_inputs

__all__ = ["DIFFERENCE_METHODS", "JVP_METHODS", "Linearization", "ReferenceProducts",
           "eval_mode"]

JVP_METHODS = ("forward", "double-vjp", "finite-difference", "central-difference")
# τ = c·eps^(1/2 or 1/3); c from benchmarks/jvp_accuracy.py (docs/offsets.md)
_DIFFERENCES = {"finite-difference": 0.5, "central-difference": 0.1}
DIFFERENCE_METHODS = tuple(_DIFFERENCES)

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (dropout off), restoring each one's mode after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


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
        jacobian_chunk_size: rows of A_Bᵀ computed at once by ``jacobian`` (None: all).
        math_attention_vjp: run the VJP with math-backend attention (see the module notes).
        jvp_method: how A_Bᵀt is computed (see :meth:`logps_and_jvp`): ``"forward"``
            (default; exact, one forward-mode pass), ``"double-vjp"`` (exact, two backward
            passes), ``"finite-difference"`` (one extra plain forward at θ₀ + s·t, relative
            error ≈ √eps: 1e-3 in float32, up to 3e-2 at a LoRA θ₀; 1e-7 in float64) or
            ``"central-difference"`` (two extra forwards, 1e-4 to 1e-3 / 1e-8). The difference
            methods need float32 or float64 and run the fused attention kernels.
        truncate: run the products through the trainable tail only (:mod:`auxdpo.tail`)
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
        named = dict(model.named_parameters())
        if param_names is None:
            param_names = [name for name, p in named.items() if p.requires_grad]
        if not param_names:
            raise ValueError("param_names is empty and the model has no parameter with "
                             "requires_grad: nothing is trainable")
        unknown = [name for name in param_names if name not in named]
        if unknown:
            raise ValueError(f"param_names not found in model.named_parameters(): {unknown[:5]}")
        if len(set(param_names)) != len(param_names):
            raise ValueError("param_names contains duplicates")
        self.model = model
        self.param_names = list(param_names)
        self.average = average
        self.jacobian_chunk_size = jacobian_chunk_size
        self.math_attention_vjp = math_attention_vjp
        self.jvp_method = jvp_method
        self._fd_gain: float | None = None      # last ‖A_Bᵀt‖/‖t‖ seen (difference methods)
        self.shapes = [named[name].shape for name in self.param_names]
        self.numels = [named[name].numel() for name in self.param_names]
        self.dim = int(sum(self.numels))
        self._snapshot = ({name: named[name].detach().clone() for name in self.param_names}
                          if snapshot else None)
        if jvp_method in _DIFFERENCES and torch.finfo(self.dtype).bits < 32:
            raise ValueError(f"jvp_method {jvp_method!r} needs float32 or float64 parameters "
                             f"(got {self.dtype}): a difference quotient in 16-bit arithmetic "
                             "has no correct digits; use jvp_method='forward'")
        self._tail, reason = find_tail(model, self.param_names) if truncate else (None, "off")
        self._tail_checked = self._tail is None
        self.share_prefix = True          # accept tail inputs captured from the policy's pass
        self._share_checked = False
        if self._tail is None:
            logger.info("reference products: full model pass (%s)", reason)

    # ---- parameters ----------------------------------------------------------------------

    @property
    def reference(self) -> dict[str, torch.Tensor]:
        """θ₀ as ``{name: tensor}`` (detached)."""
        if self._snapshot is not None:
            return self._snapshot
        named = dict(self.model.named_parameters())
        return {name: named[name].detach() for name in self.param_names}

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.reference.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.reference.values())).device

    @property
    def difference_gain(self) -> float | None:
        """The difference JVP's step-size state (last ‖A_Bᵀt‖/‖t‖; None before the first
        call). Saved in checkpoints so that a resumed run takes the same steps."""
        return self._fd_gain

    @difference_gain.setter
    def difference_gain(self, value: float | None) -> None:
        self._fd_gain = None if value is None else float(value)

    def flatten(self, tensors: list[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors (in ``param_names`` order) into a ``(d,)`` vector."""
        if isinstance(tensors, Mapping):
            tensors = [tensors[name] for name in self.param_names]
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a ``(d,)`` vector into tensors shaped like the trainable parameters."""
        if vector.shape != (self.dim,):
            raise ValueError(f"vector has shape {tuple(vector.shape)}, expected ({self.dim},)")
        pieces = torch.split(vector, self.numels)
        return [piece.reshape(shape) for piece, shape in zip(pieces, self.shapes)]

    def _frozen(self) -> dict[str, torch.Tensor]:
        trainable = set(self.param_names)
        return {name: p.detach() for name, p in self.model.named_parameters()
                if name not in trainable}

    @property
    def truncated(self) -> bool:
        """True when the products run through the trainable tail only."""
        return self._tail is not None

    def _full_logps_fn(self, batch: Mapping[str, torch.Tensor]):
        frozen = self._frozen()

        def logps(*theta: torch.Tensor) -> torch.Tensor:
            params = dict(frozen)
            params.update(zip(self.param_names, theta))
            return model_sequence_logps(self.model, batch, average=self.average, params=params)

        return logps

    @property
    def tail_plan(self) -> TailPlan | None:
        """The trainable tail the products run through, or None (full model pass)."""
        return self._tail

    def _logps_fn(self, batch: Mapping[str, torch.Tensor],
                  captured: CapturedInputs | None = None):
        """θ (as positional tensors in ``param_names`` order) ↦ ``(N,)`` reference log-probs.

        With a tail plan, the frozen prefix runs here, once, and the function runs the tail;
        ``captured`` (the tail's inputs recorded from the policy's own forward on ``batch``,
        :meth:`TailPlan.recording`) replaces that prefix pass. The first such capture is
        compared with the products' own; if they differ (active dropout or autocast in the
        prefix), shared captures are refused from then on (``share_prefix`` turns False)."""
        if self._tail is None:
            return self._full_logps_fn(batch)
        plan = self._tail
        if captured is not None and not self.share_prefix:
            captured = None
        if captured is not None and not self._share_checked:
            own = plan.capture(batch)
            self._share_checked = True
            if not same_inputs(captured, own):
                warnings.warn("reference products: the policy forward's input to the first "
                              "trainable block differs from the reference's (dropout or "
                              "autocast in the frozen prefix?); running the prefix separately",
                              RuntimeWarning, stacklevel=4)
                self.share_prefix = False
                captured = own
        inputs = captured if captured is not None else plan.capture(batch)
        frozen = {name: tensor for name, tensor in self._frozen().items()
                  if name in plan.model_to_tail}

        def logps(*theta: torch.Tensor) -> torch.Tensor:
            params = dict(frozen)
            params.update(zip(self.param_names, theta))
            return plan.logps(inputs, batch, params, average=self.average)

        if not self._tail_checked:
            self._check_tail(batch, logps)
            if self._tail is None:
                return self._full_logps_fn(batch)
        return logps

    def _prepare(self, batch: Mapping[str, torch.Tensor],
                 captured: CapturedInputs | None = None) -> Callable:
        """:meth:`_logps_fn` with the frozen prefix (if any) run on the default attention
        kernels; the products then run the returned function in their own context."""
        with self._context(math_attention=False):
            return self._logps_fn(batch, captured)

    def _check_tail(self, batch: Mapping[str, torch.Tensor], tail_fn) -> None:
        """First batch: the tail must reproduce the whole model's log-probs, else fall back."""
        theta = [t.detach() for t in self.reference.values()]
        with torch.no_grad():
            full, tail = self._full_logps_fn(batch)(*theta), tail_fn(*theta)
        # 16-bit parameters: bf16/fp16 round-off, even when a mixed-precision wrapper (accelerate
        # under bf16: true) hands the full pass float32 logits.
        bits = min(torch.finfo(t.dtype).bits for t in (full, tail, *theta))
        tolerance = 1e-4 if bits >= 32 else 5e-2
        error = float((full - tail).abs().max()) / max(float(full.abs().max()), 1.0)
        self._tail_checked = True
        if not error <= tolerance:
            warnings.warn(f"reference products: the trainable tail does not reproduce the "
                          f"model's log-probs (relative error {error:.2e}); using the full "
                          "model pass", RuntimeWarning, stacklevel=4)
            self._tail = None
            return
        plan = self._tail
        logger.info("reference products: trainable tail only (from block %d of %d)",
                    plan.first, plan.num_blocks)

    @contextlib.contextmanager
    def _context(self, math_attention: bool) -> Iterator[None]:
        """Dropout off, optionally math-backend attention, and autocast off (the products
        run in the model's own dtype even when called inside a mixed-precision region)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(self.model))
            if math_attention:
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
            yield

    def logps(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(N,)`` reference log-probs log π_θ₀(a_j|s_j) (no graph, dropout off)."""
        with torch.no_grad(), self._context(math_attention=False):
            return self._logps_fn(batch)(*self.reference.values())

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
        difference = self.jvp_method in _DIFFERENCES
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

    def _tangents(self, tangent: torch.Tensor, like) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(p) for t, p in zip(self.unflatten(tangent), like))

    def _vjp_of(self, fn: Callable, cotangent: torch.Tensor, graph=None) -> torch.Tensor:
        if graph is None:
            theta = [t.detach().requires_grad_(True) for t in self.reference.values()]
            with self._context(self.math_attention_vjp), torch.enable_grad():
                logps = fn(*theta)
        else:
            logps, theta = graph
        _check_vector("cotangent", cotangent, logps.shape[0])
        grads = torch.autograd.grad(logps, theta, grad_outputs=cotangent.to(logps),
                                    allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, theta)]
        return self.flatten(grads)

    def _jvp_of(self, fn: Callable, tangent: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        theta = tuple(self.reference.values())
        if self.jvp_method in _DIFFERENCES:
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

    def _difference(self, fn: Callable, tangent: torch.Tensor, logps: torch.Tensor
                    ) -> torch.Tensor:
        """A_Bᵀt by a difference quotient of ``fn`` around θ₀, whose values ``logps`` are given.

        The step s is set so that the predicted relative change of the log-probs,
        ‖s·A_Bᵀt‖/‖log π‖, is τ = 0.5·√eps (one-sided) or 0.1·eps^(1/3) (central): the
        balance of truncation and round-off, measured on GPT-2 tails (docs/offsets.md). It
        needs ‖A_Bᵀt‖/‖t‖, taken from the previous call (a pilot quotient on the first)."""
        _check_vector("tangent", tangent, self.dim)
        logps = logps.detach()
        norm_t = float(tangent.norm())
        if norm_t == 0.0:
            return torch.zeros_like(logps)
        central = self.jvp_method == "central-difference"
        eps = torch.finfo(logps.dtype).eps
        tau = _DIFFERENCES[self.jvp_method] * eps ** (1 / 3 if central else 1 / 2)
        scale = max(float(logps.norm()), 1.0)
        theta = tuple(self.reference.values())
        tangents = self._tangents(tangent, theta)

        def quotient(step: float) -> torch.Tensor:
            with torch.no_grad(), self._context(math_attention=False):
                plus = fn(*[p + step * t for p, t in zip(theta, tangents)])
                if not central:
                    return (plus - logps) / step
                minus = fn(*[p - step * t for p, t in zip(theta, tangents)])
                return (plus - minus) / (2 * step)

        gain = self._fd_gain
        if gain is None:                      # pilot: step of relative size √eps in θ
            size = max(float(torch.sqrt(sum((p.double() ** 2).sum() for p in theta))), 1.0)
            pilot = quotient(eps ** 0.5 * size / norm_t)
            gain = float(pilot.norm()) / norm_t
            if not (math.isfinite(gain) and gain > 0):
                return pilot if bool(torch.isfinite(pilot).all()) else torch.zeros_like(logps)
        directional = quotient(tau * scale / (gain * norm_t))
        new_gain = float(directional.norm()) / norm_t
        if math.isfinite(new_gain) and new_gain > 0:
            self._fd_gain = new_gain
        return directional

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


def _check_vector(name: str, vector: torch.Tensor, length: int) -> None:
    if vector.shape != (length,):
        raise ValueError(f"{name} has shape {tuple(vector.shape)}, expected ({length},) — "
                         "one entry per row of the batch (chosen rows, then rejected)")


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
        if self.products.jvp_method in _DIFFERENCES:
            return self.products._difference(self._fn, tangent, self.logps)
        return self.products._jvp_of(self._fn, tangent)[1]

    def release(self) -> None:
        """Drop the kept graph (if any) without using it."""
        self._graph = None
