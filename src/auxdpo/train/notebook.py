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

What lives here: :class:`NotebookTraining`, the objective the trainer holds instead of
:class:`~auxdpo.train.offsets_training.OffsetsTraining` when the preset is set (its config
checks are :func:`auxdpo.train.config.check_notebook_preset`). δ′'s storage, keys and
checkpoint state are those of :class:`auxdpo.offsets.AuxOffsets` (batch mode), whose own
optimizer and step are not used.
"""

from __future__ import annotations

import warnings

import torch

from auxdpo.offsets.products import DIFFERENCE_METHODS
from auxdpo.train.offsets_training import OffsetsTraining, build_offsets
from auxdpo.train.reference_pass import PathOptions

__all__ = ["NotebookTraining"]

class NotebookTraining(OffsetsTraining):
    """The preset's objective on δ′ for ``trainer``: δ′ inside β, its penalty part of each
    micro-batch's loss, δ′ trained in the model's optimizer and clipped with the model."""

    fuses_reference = False   # the loss takes the model's reference pass

    def __init__(self, trainer, options: PathOptions) -> None:
        args = trainer.args
        if trainer.accelerator.num_processes > 1:
            raise ValueError("aux_preset: notebook runs on one process: δ′ is trained outside "
                             "the model's distributed wrapper; launch a single process")
        if trainer.optimizer is not None:
            raise ValueError("aux_preset: notebook adds δ′ to the trainer's own optimizer; "
                             "pass no optimizers")
        if options.jvp in DIFFERENCE_METHODS:
            raise ValueError("aux_preset: notebook needs an exact A_Bᵀv: a path with jvp "
                             "forward or double-vjp, not a difference quotient")
        super().__init__(trainer, options)
        self.beta = trainer.beta
        self.lambda_null = float(args.notebook_lambda_null)
        self.lambda_amp = float(args.notebook_lambda_amp)
        if self.lambda_amp and args.notebook_delta_cap is None:
            warnings.warn("notebook_lambda_amp rewards ‖δ′_B‖² without bound along the null "
                          "space of A_B; set notebook_delta_cap to keep δ′ finite",
                          RuntimeWarning, stacklevel=3)

    def _build(self, trainer, options: PathOptions):
        # Every response weighs once (its own penalty, no ω): multiplicity spares prepare()
        # the reference pass of the π_ref weightings.
        return build_offsets(trainer, options, exact=True, null_weights="multiplicity",
                             delta_cap=trainer.args.notebook_delta_cap)

    @property
    def raw(self) -> torch.Tensor:
        """The trained parameter: δ′ itself, or raw with δ′ = cap·tanh(raw)."""
        return self.offsets.raw

    def deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """β·δ′ in reward units: β·(h + δ′_w − δ′_l) = β·h + β·δ′_w − β·δ′_l."""
        chosen, rejected = self.offsets.deltas(index)
        return self.beta * chosen, self.beta * rejected

    def extra_loss(self, inputs: dict) -> torch.Tensor:
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
        self._log("aux/penalty", float(penalty.detach()))
        if self.offsets.prior_precision:
            penalty = penalty + self.prior(inputs["aux_index"], chosen, rejected)
        return penalty

    def prior(self, index: torch.Tensor, chosen: torch.Tensor,
              rejected: torch.Tensor) -> torch.Tensor:
        """The Gaussian prior on δ = β·δ′ in reward units (``aux_delta_scale``): the mean of the
        micro-batch rows' shares (τ/2)·(δ_w²/c_w + δ_l²/c_l), i.e. (τβ²/2)·(δ′_w²/c_w +
        δ′_l²/c_l), normalised like the micro-batch's mean loss (:mod:`auxdpo.offsets.prior`);
        logs the full value (τ/2n)Σ_k δ_k² as ``aux/prior``."""
        beta = self.beta
        shares = self.offsets.prior_shares(index, beta * chosen, beta * rejected)
        self._log("aux/prior", self.offsets.prior_total(beta * self.offsets.values()))
        return shares.mean()

    def after_backward(self, inputs: dict) -> None:
        """Nothing to file: δ′'s gradient is in its ``.grad`` like the model's."""

    def after_optimizer_step(self) -> None:
        """Drop raw's gradient (the Trainer zeroes the model's only); no step of its own."""
        self.raw.grad = None

    def model_optimizer_parameters(self) -> list[torch.Tensor]:
        return [self.raw]
