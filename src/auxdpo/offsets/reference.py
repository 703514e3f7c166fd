"""The function the reference products differentiate: θ ↦ log π_θ(a_j|s_j) around θ₀.

:class:`ReferenceFunction` holds the reference point θ₀ (a snapshot of the trainable tensors
taken at construction, or read live from a frozen copy), the frozen rest of the model, and
the choice of path: the whole model, or only its trainable tail (:mod:`auxdpo.offsets.tail`),
checked against the whole model on the first batch. Every evaluation runs the model through
``torch.func.functional_call`` with θ substituted, in :meth:`ReferenceFunction.context`:
dropout off (:func:`eval_mode`), autocast off, optionally math-backend attention. The products
themselves (VJP, JVP, Jacobian) are :class:`auxdpo.offsets.products.ReferenceProducts`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from auxdpo.logps import model_sequence_logps
from auxdpo.offsets.tail import CapturedInputs, TailPlan, find_tail, same_inputs

__all__ = ["ReferenceFunction", "check_vector", "eval_mode"]

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


class ReferenceFunction:
    """θ (the trainable tensors, ``d`` scalars in all) ↦ the ``(N,)`` log-probs of a batch,
    around the reference point θ₀; the rest of the model frozen at its current values.

    Args: see :class:`auxdpo.offsets.products.ReferenceProducts`, which holds one.
    """

    def __init__(self, model: torch.nn.Module, param_names: list[str] | None = None, *,
                 average: bool = False, snapshot: bool = True, truncate: bool = True) -> None:
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
        self.shapes = [named[name].shape for name in self.param_names]
        self.numels = [named[name].numel() for name in self.param_names]
        self.dim = int(sum(self.numels))
        self._snapshot = ({name: named[name].detach().clone() for name in self.param_names}
                          if snapshot else None)
        # The path: the trainable tail when ``truncate`` and the model allows it.
        self._tail, reason = find_tail(self.model, self.param_names) if truncate else (None, "off")
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

    def logps_fn(self, batch: Mapping[str, torch.Tensor],
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

    def prepare(self, batch: Mapping[str, torch.Tensor],
                 captured: CapturedInputs | None = None) -> Callable:
        """:meth:`logps_fn` with the frozen prefix (if any) run on the default attention
        kernels; the products then run the returned function in their own context."""
        with self.context(math_attention=False):
            return self.logps_fn(batch, captured)

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
    def context(self, math_attention: bool) -> Iterator[None]:
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
        with torch.no_grad(), self.context(math_attention=False):
            return self.logps_fn(batch)(*self.reference.values())

    def tangents(self, tangent: torch.Tensor, like) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(p) for t, p in zip(self.unflatten(tangent), like))


def check_vector(name: str, vector: torch.Tensor, length: int) -> None:
    """ValueError unless ``vector`` is ``(length,)``."""
    if vector.shape != (length,):
        raise ValueError(f"{name} has shape {tuple(vector.shape)}, expected ({length},) — "
                         "one entry per row of the batch (chosen rows, then rejected)")
