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
import warnings
from collections.abc import Iterator, Mapping

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from auxdpo.logps import model_sequence_logps

__all__ = ["ReferenceProducts", "eval_mode"]


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
        jvp_method: ``"forward"`` (default, ``torch.func.jvp``) or ``"double-vjp"`` (two
            backward passes; faster only for tiny, overhead-bound models, see
            docs/benchmarks.md); see :meth:`logps_and_jvp`.
    """

    def __init__(self, model: torch.nn.Module, param_names: list[str] | None = None, *,
                 average: bool = False, snapshot: bool = True,
                 jacobian_chunk_size: int | None = None,
                 math_attention_vjp: bool = True, jvp_method: str = "forward") -> None:
        if jvp_method not in ("double-vjp", "forward"):
            raise ValueError(f"jvp_method must be 'double-vjp' or 'forward', got {jvp_method!r}")
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
        self.shapes = [named[name].shape for name in self.param_names]
        self.numels = [named[name].numel() for name in self.param_names]
        self.dim = int(sum(self.numels))
        self._snapshot = ({name: named[name].detach().clone() for name in self.param_names}
                          if snapshot else None)

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

    def _logps_fn(self, batch: Mapping[str, torch.Tensor]):
        """θ (as positional tensors in ``param_names`` order) ↦ ``(N,)`` reference log-probs."""
        frozen = self._frozen()

        def logps(*theta: torch.Tensor) -> torch.Tensor:
            params = dict(frozen)
            params.update(zip(self.param_names, theta))
            return model_sequence_logps(self.model, batch, average=self.average, params=params)

        return logps

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
        theta = [t.detach().requires_grad_(True) for t in self.reference.values()]
        with self._context(self.math_attention_vjp), torch.enable_grad():
            logps = self._logps_fn(batch)(*theta)
            _check_vector("cotangent", cotangent, logps.shape[0])
            grads = torch.autograd.grad(logps, theta, grad_outputs=cotangent.to(logps),
                                        allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, theta)]
        return self.flatten(grads)

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
        theta = tuple(self.reference.values())
        tangents = tuple(t.to(p) for t, p in zip(self.unflatten(tangent), theta))
        if self.jvp_method == "forward":
            with self._context(math_attention=True), torch.no_grad():
                logps, directional = torch.func.jvp(self._logps_fn(batch), theta, tangents)
            return logps, directional
        leaves = [t.detach().requires_grad_(True) for t in theta]
        with self._context(self.math_attention_vjp), torch.enable_grad():
            logps = self._logps_fn(batch)(*leaves)
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
        fn = self._logps_fn(batch)
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
