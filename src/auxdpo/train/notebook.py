"""``aux_preset: notebook``: the authors' notebook objective, exactly (docs/notebook.md).

Per micro-batch B of G pairs, with h_i the chosen minus the rejected log-ratio and δ′ the
notebook's offsets (inside β)::

    L_nb(θ, δ′) = mean_i −log σ(β·(h_i + δ′_w,i − δ′_l,i))
                  + λ_nb·‖A_B δ′_B‖² − λ_amp,nb·‖δ′_B‖²

A_B is the reference Jacobian over the micro-batch's 2G responses (columns in the batch's row
order, one per occurrence), both norms are plain sums, and the amplitude term is subtracted
(rewarded). δ′ = cap·tanh(raw) with ``notebook_delta_cap``, else δ′ = raw. raw is trained in
the model's own optimizer (its learning rate, schedule and weight decay) and clipped with the
model's gradients; the penalty is part of each micro-batch's loss, which the Trainer divides
by the accumulation steps like the rest of it.

``aux_delta_scale`` σ (a Gaussian prior, :mod:`auxdpo.offsets.prior`) applies to δ = β·δ′ in
reward units: each micro-batch adds mean_i (τβ²/2)·(δ′_w,i²/c_w,i + δ′_l,i²/c_l,i), τ = 1/σ²,
an unbiased estimate of (τ/2n)Σ_k δ_k² like the mean loss is of the full loss. With
``aux_delta_scale: null`` the objective above is the notebook's, exactly.

What lives here: the config check (:func:`check_notebook_preset`, called by
``AuxDPOConfig.__post_init__``), the penalty (:class:`NotebookPreset`) and the trainer's
hooks for the optimizer and the clipping (:class:`NotebookPresetMixin`). δ′'s storage, keys
and checkpoint state are those of :class:`auxdpo.offsets.AuxOffsets` (batch mode), whose own
optimizer and step are not used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import fields

import torch
from transformers import TrainerCallback

__all__ = ["NOTEBOOK", "PRESETS", "NotebookPreset", "NotebookPresetMixin",
           "check_notebook_preset"]

NOTEBOOK = "notebook"
PRESETS = (NOTEBOOK,)
_NOTEBOOK_FIELDS = ("notebook_lambda_null", "notebook_lambda_amp", "notebook_delta_cap")
# auxdpo's own δ settings, which the preset replaces, and what to do instead.
_REPLACED = {"lambda_null": "set notebook_lambda_null (the notebook's λ as it is)",
             "lambda_amp": "set notebook_lambda_amp (the notebook's λ_amp as it is)",
             "amp_sign": "the notebook rewards ‖δ′‖²: set notebook_lambda_amp",
             "delta_cap": "set notebook_delta_cap (the notebook's cap on δ′)",
             "delta_lr": "δ′ trains at the model's learning_rate",
             "delta_optimizer": "δ′ joins the model's optimizer (optim)",
             "recompute_u_every": "it belongs to aux_constraint: global",
             "aux_null_weights": "the notebook weighs every response once"}


def _defaults(config) -> dict:
    return {f.name: f.default for f in fields(config) if f.name in _REPLACED
            or f.name in _NOTEBOOK_FIELDS}


def check_notebook_preset(config) -> None:
    """Validate ``aux_preset`` and the ``notebook_*`` keys; with the preset, switch
    ``aux_constraint`` to batch and ``aux_jvp`` to an exact method (ValueError naming the
    option for a combination the preset cannot honour)."""
    preset, defaults = config.aux_preset, _defaults(config)
    if preset is None:
        for name in _NOTEBOOK_FIELDS:
            if getattr(config, name) != defaults[name]:
                raise ValueError(f"{name} is read only with aux_preset: notebook; set the "
                                 "preset or remove the key")
        return
    if preset not in PRESETS:
        raise ValueError(f"aux_preset must be one of {PRESETS} or None, got {preset!r}")
    if config.method != "auxdpo":
        raise ValueError(f"aux_preset: notebook trains AuxDPO; method is {config.method!r}")
    if config.aux_constraint == "projection":
        raise ValueError("aux_preset: notebook is the batch constraint; remove "
                         "aux_constraint: projection")
    if config.aux_jvp == "finite-difference":
        raise ValueError("aux_preset: notebook needs an exact A_Bᵀv: set aux_jvp to forward "
                         "or double-vjp, not finite-difference")
    for name, instead in _REPLACED.items():
        if getattr(config, name) != defaults[name]:
            raise ValueError(f"aux_preset: notebook replaces {name}: leave it at its "
                             f"default ({defaults[name]!r}); {instead}")
    for name in ("notebook_lambda_null", "notebook_lambda_amp"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    cap = config.notebook_delta_cap
    if cap is not None and not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
        raise ValueError(f"notebook_delta_cap must be > 0 or None, got {cap!r}")
    config.aux_constraint = "batch"      # the field's default (global) is read as unset
    if config.aux_jvp == "central-difference":
        config.aux_jvp = "forward"       # the default difference quotient is not exact


class _ZeroGradCallback(TrainerCallback):
    """After each optimizer step, drop raw's gradient (the Trainer zeroes the model's only)."""

    def __init__(self, preset: "NotebookPreset") -> None:
        self.preset = preset

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.preset.raw.grad = None
        return control


class NotebookPreset:
    """The preset's penalty and δ′'s parameter, for a trainer whose ``offsets`` hold δ′."""

    def __init__(self, trainer) -> None:
        args = trainer.args
        if trainer.accelerator.num_processes > 1:
            raise ValueError("aux_preset: notebook runs on one process: δ′ is trained outside "
                             "the model's distributed wrapper; launch a single process")
        if trainer.optimizer is not None:
            raise ValueError("aux_preset: notebook adds δ′ to the trainer's own optimizer; "
                             "pass no optimizers")
        self.trainer, self.offsets = trainer, trainer.offsets
        self.lambda_null = float(args.notebook_lambda_null)
        self.lambda_amp = float(args.notebook_lambda_amp)
        if self.lambda_amp and args.notebook_delta_cap is None:
            warnings.warn("notebook_lambda_amp rewards ‖δ′_B‖² without bound along the null "
                          "space of A_B; set notebook_delta_cap to keep δ′ finite",
                          RuntimeWarning, stacklevel=3)
        trainer.add_callback(_ZeroGradCallback(self))

    @property
    def raw(self) -> torch.Tensor:
        """The trained parameter: δ′ itself, or raw with δ′ = cap·tanh(raw)."""
        return self.offsets.raw

    def penalty(self, inputs) -> torch.Tensor:
        """λ_nb·‖A_B δ′_B‖² − λ_amp,nb·‖δ′_B‖² of one micro-batch: its exact value, and its
        exact gradient in δ′ (2λ_nb·A_Bᵀ A_B δ′_B − 2λ_amp,nb·δ′_B; A_B is θ₀'s, so none in θ);
        plus the prior's share (:meth:`prior`) when ``aux_delta_scale`` is set."""
        chosen, rejected = self.offsets.deltas(inputs["aux_index"])
        delta = torch.cat([chosen, rejected])              # (2G,), the batch's row order
        penalty = -self.lambda_amp * delta.pow(2).sum()
        if self.lambda_null and bool(torch.any(delta != 0)):
            linear = self.offsets.products.linearize(inputs)
            with torch.no_grad():
                image = linear.vjp(delta.detach())          # A_B δ′_B, (d,)
                back = linear.jvp(image).to(delta)          # A_Bᵀ A_B δ′_B, (2G,)
            # Value λ‖A_Bδ′_B‖²; gradient 2λ·A_Bᵀ(A_Bδ′_B) through the linear term (whose
            # value is cancelled exactly by its detached copy).
            linear_term = (2 * self.lambda_null * back * delta).sum()
            null = self.lambda_null * image.pow(2).sum().to(delta)
            penalty = penalty + null + (linear_term - linear_term.detach())
        metrics = self.trainer._metrics["train"]
        metrics["aux/penalty"].append(float(penalty.detach()))
        if self.offsets.prior_precision:
            penalty = penalty + self.prior(inputs["aux_index"], chosen, rejected)
        return penalty

    def prior(self, index: torch.Tensor, chosen: torch.Tensor,
              rejected: torch.Tensor) -> torch.Tensor:
        """The Gaussian prior on δ = β·δ′ in reward units (``aux_delta_scale``): the mean of the
        micro-batch rows' shares (τ/2)·(δ_w²/c_w + δ_l²/c_l), i.e. (τβ²/2)·(δ′_w²/c_w +
        δ′_l²/c_l), normalised like the micro-batch's mean loss (:mod:`auxdpo.offsets.prior`);
        logs the full value (τ/2n)Σ_k δ_k² as ``aux/prior``."""
        beta = self.trainer.beta
        shares = self.offsets.prior_shares(index, beta * chosen, beta * rejected)
        value = self.offsets.prior_total(beta * self.offsets.values())
        self.trainer._metrics["train"]["aux/prior"].append(value)
        return shares.mean()


class NotebookPresetMixin:
    """Trainer hooks of the preset; inert while ``self.notebook`` is None."""

    notebook: NotebookPreset | None = None

    def _build_notebook(self) -> NotebookPreset | None:
        return NotebookPreset(self) if self.args.aux_preset == NOTEBOOK else None

    def _reward_deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ_chosen, δ_rejected) in reward units: the offsets' own, or β·δ′ with the preset
        (β·(h + δ′_w − δ′_l) = β·h + β·δ′_w − β·δ′_l)."""
        chosen, rejected = self.offsets.deltas(index)
        if self.notebook is None:
            return chosen, rejected
        return self.beta * chosen, self.beta * rejected

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.notebook is not None:
            raw = self.notebook.raw
            if not any(p is raw for group in optimizer.param_groups for p in group["params"]):
                # The model's decay group's settings: its learning rate (and hence the
                # schedule, built after this), weight decay, betas and eps.
                optimizer.add_param_group({"params": [raw],
                                           "weight_decay": self.args.weight_decay})
        return optimizer

    def _clip_grad_norm(self, model):
        if self.notebook is None:
            return super()._clip_grad_norm(model)
        params = [*model.parameters(), self.notebook.raw]
        return self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm)
