"""AuxOffsets' checkpoint state (:class:`OffsetsStateMixin`), and reading states saved before
offsets were keyed by slot.

Older states are row-keyed with multiplicity weights (ω = 1): δ and its row-Adam moments
are ``(n, 2)`` tables with one step count per row. Keyed states hold them as ``(K,)``
vectors with one step count per slot, in the order (δ_{0,w}, δ_{0,l}, δ_{1,w}, ...), which
for row keying is the old table read row by row.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["OffsetsStateMixin", "upgrade_legacy_state"]


def upgrade_legacy_state(state: dict) -> dict:
    """``state`` unchanged if it names its keying; else the row-keyed equivalent."""
    if "keying" in state:
        return state
    state = dict(state, keying="row", null_weights="multiplicity")
    n = int(state["num_examples"])
    state["slots"] = torch.arange(2 * n, dtype=torch.long).view(n, 2)
    if "raw" in state:                       # global/batch: per-row tables → slot vectors
        state["raw"] = state["raw"].reshape(-1)
        optimizer = dict(state["optimizer"])
        for key in ("exp_avg", "exp_avg_sq"):
            if key in optimizer:
                optimizer[key] = optimizer[key].reshape(-1)
        optimizer["steps"] = optimizer["steps"].repeat_interleave(2)
        state["optimizer"] = optimizer
    return state


class OffsetsStateMixin:
    """``state_dict`` / ``load_state_dict`` of :class:`auxdpo.offsets.AuxOffsets`."""

    def state_dict(self) -> dict:
        """δ's parameters, optimizer state, u (global), Γ (projection), the step count, the
        keys (keying, weighting, slot map, ω), the prior's σ and the difference JVP's
        step-size state."""
        state = {"mode": self.mode, "num_examples": self.num_examples,
                 "num_steps": self.num_steps, "optimizer": self.optimizer.state_dict(),
                 "keying": self.keys.keying, "null_weights": self.null_weights,
                 "slots": self.slots.clone(), "delta_scale": self.delta_scale,
                 "delta_half_count": self.delta_half_count}
        if self.weights is not None:
            state["weights"] = self.weights.clone()
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
        ``recompute`` is True, or None and :meth:`prepare` was given re-iterable batches.
        The keys must match; ω is taken from the state (exact resume)."""
        state = upgrade_legacy_state(state)
        for key, expected in (("mode", self.mode), ("num_examples", self.num_examples),
                              ("keying", self.keys.keying),
                              ("null_weights", self.null_weights)):
            if state.get(key) != expected:
                raise ValueError(f"state {key}={state.get(key)!r} does not match {expected!r}")
        for key, name in (("delta_scale", "σ"), ("delta_half_count", "c½")):
            if key in state and state[key] != getattr(self, key):
                warnings.warn(f"resuming offsets trained with the prior's {name} = "
                              f"{state[key]} ({key}) under {name} = {getattr(self, key)}: "
                              "the objective changes at this step", RuntimeWarning,
                              stacklevel=2)
        if not torch.equal(state["slots"].cpu(), self.slots.cpu()):
            raise ValueError("state's slot map differs from this data's: the checkpoint's "
                             "offsets key other rows or responses (different data, order or "
                             "tokenizer)")
        if "weights" in state:
            weights = state["weights"].to(self.device, self.dtype)
            if self.weights is not None and not torch.allclose(weights, self.weights,
                                                               rtol=1e-6, atol=0):
                raise ValueError(f"state's constraint weights ω ({self.null_weights}) differ "
                                 "from this run's by more than 1e-6 relative: another "
                                 "reference model or data")
            self._set_weights(weights)
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
