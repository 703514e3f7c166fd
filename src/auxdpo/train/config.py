"""``AuxDPOConfig``: TRL's ``DPOConfig`` plus the fields that pick and tune the method.

Switching method is one field (``method``); every method is scored by the shared loss functions
of :mod:`auxdpo.losses`, never by TRL's ``loss_type`` branches. TRL's loss options
(``loss_type``, ``loss_weights``, ``use_weighting``, ``ld_alpha``, ``f_divergence_type``,
``label_smoothing``) are mapped onto those functions or refused (:mod:`auxdpo.train.trl_compat`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trl import DPOConfig

from auxdpo.losses import LOSSES, PAPER_METHODS
from auxdpo.offsets.constraints import MODES
from auxdpo.train.aux_defaults import (
    DEFAULT_DELTA_HALF_COUNT,
    DEFAULT_DELTA_SCALE,
    DEFAULT_NULL_WEIGHTS,
)
from auxdpo.train.config_check import check_finite_positive, unknown_method_message
from auxdpo.train.defaults import apply_hardware_defaults
from auxdpo.train.notebook import check_notebook_preset
from auxdpo.train.reporting import check_report_to
from auxdpo.train.trl_losses import resolve_loss_options

__all__ = ["AUX_CONSTRAINTS", "AuxDPOConfig", "parse_capacity"]

AUX_CONSTRAINTS = MODES   # AuxOffsets' constraint modes (auxdpo.offsets.constraints)


def parse_capacity(spec: str) -> tuple[str, object]:
    """Split a capacity preset into ``(kind, argument)``; raise ValueError on a bad spec.

    ``full`` → ("full", None); ``last-block`` → ("last", 1 block); ``last:0.25`` →
    ("last_fraction", 0.25); ``lora:4`` → ("lora", 4); ``regex:<pattern>`` → ("regex", pattern).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"capacity must be a non-empty string, got {spec!r}")
    if spec == "full":
        return "full", None
    if spec in ("last-block", "last_block"):
        return "last_blocks", 1
    kind, sep, arg = spec.partition(":")
    if not sep:
        raise ValueError(f"capacity {spec!r}: expected full, last-block, last:<fraction>, "
                         "lora:<rank> or regex:<pattern>")
    if kind == "last":
        try:
            fraction = float(arg)
        except ValueError:
            raise ValueError(f"capacity {spec!r}: fraction must be a number in (0, 1]") from None
        if not 0 < fraction <= 1:
            raise ValueError(f"capacity {spec!r}: fraction must lie in (0, 1]")
        return "last_fraction", fraction
    if kind == "lora":
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"capacity {spec!r}: LoRA rank must be a positive integer")
        return "lora", int(arg)
    if kind == "regex":
        try:
            re.compile(arg)
        except re.error as exc:
            raise ValueError(f"capacity {spec!r}: bad regular expression ({exc})") from None
        return "regex", arg
    raise ValueError(f"capacity {spec!r}: unknown preset {kind!r}")


@dataclass
class AuxDPOConfig(DPOConfig):
    """Training configuration for :class:`~auxdpo.train.trainer.AuxDPOTrainer`.

    All of ``DPOConfig``/``TrainingArguments`` applies; the fields below are added. The method
    is ``method``; TRL's ``loss_type`` may add terms to it (e.g. ``["sigmoid", "sft"]``).
    """

    method: str = field(default="auxdpo", metadata={
        "help": "Preference method: dpo, ipo, dpop, auxdpo, or one of TRL's loss_type names "
                "(hinge, robust, exo_pair, ...; scored by auxdpo.losses)."})
    logp_average: bool | None = field(default=None, metadata={
        "help": "Average response log-probs over response tokens instead of summing them. "
                "Default by method: True for ipo and sigmoid_norm, False for the others."})
    dpop_lambda: float = field(default=50.0, metadata={
        "help": "DPOP's penalty weight λ on the chosen response's log-prob drop (DPOP paper: 50)."})
    capacity: str = field(default="full", metadata={
        "help": "Trainable parameters: full, last-block, last:<fraction of blocks by depth>, "
                "lora:<rank> (q/k/v/o of the last block) or regex:<pattern over parameter names>."})
    lora_alpha: float | None = field(default=None, metadata={
        "help": "LoRA scaling α for capacity lora:<r> (default: 2·r)."})
    aux_constraint: str = field(default="global", metadata={
        "help": "How AuxDPO keeps δ in the null space of A: global (dataset-wide penalty), "
                "batch (batchwise penalty) or projection (exact, small trainable sets)."})
    aux_offsets: str = field(default="response", metadata={
        "help": "What one AuxDPO offset δ belongs to: response (one per unique prompt and "
                "response token ids, shared by every pair the response occurs in, as the "
                "paper's δ(s, a)) or row (one per pair and side; acts only from epoch 2)."})
    aux_null_weights: str = field(default=DEFAULT_NULL_WEIGHTS, metadata={
        "help": "Weights ω of the empirical constraint Σ ω δ ∇log π_ref = 0: prompt (π_ref "
                "normalised per prompt: consistent whatever the data's design), multiplicity "
                "(occurrence counts, the paper's Monte Carlo sum) or reference (unnormalised "
                "π_ref; short responses only). prompt and reference take one extra reference "
                "pass. Which to use and what each tends to: docs/finite_sample.md."})
    aux_delta_scale: float | None = field(default=DEFAULT_DELTA_SCALE, metadata={
        "help": "σ of a Gaussian prior on each AuxDPO offset δ, in reward units: adds "
                "(1/(2σ²n))·Σ_k δ_k² over the offsets to the objective, which keeps δ finite "
                "where hard labels separate (responses seen in few pairs) and washes out as "
                "the data grow. None (null in YAML): no prior (the paper's objective). With "
                "aux_preset notebook it applies to δ = β·δ′. Choosing σ: "
                "docs/finite_sample.md, \"The prior on the offsets\"."})
    aux_delta_half_count: float | None = field(default=DEFAULT_DELTA_HALF_COUNT, metadata={
        "help": "c½ of a count-dependent prior: the offset of a response that occurs in c "
                "pair sides gets variance σ²·c/(c + c½), so offsets of rarely compared "
                "responses are held closer to 0. None (null): σ² for every offset. "
                "docs/finite_sample.md, \"The prior on the offsets\"."})
    lambda_null: float = field(default=1.0, metadata={
        "help": "Weight λ of the null-space penalty ‖A·δ‖² (global and batch modes)."})
    lambda_amp: float = field(default=0.0, metadata={
        "help": "Weight of the amplitude term λ_amp·‖δ_B‖² (paper Sec. 7.2); 0 disables it."})
    amp_sign: int = field(default=1, metadata={
        "help": "Sign of the amplitude term: +1 shrinks δ, -1 rewards a non-trivial δ."})
    delta_lr: float = field(default=1e-2, metadata={
        "help": "Learning rate of the offsets δ (their own optimizer, not clipped with the model)."})
    delta_optimizer: str = field(default="adam", metadata={
        "help": "Optimizer of the offsets: adam (lazy, row-wise) or sgd (plain, lazy)."})
    delta_cap: float | None = field(default=None, metadata={
        "help": "Optional bound on |δ|: δ = cap·tanh(raw). None leaves δ unbounded."})
    recompute_u_every: int = field(default=0, metadata={
        "help": "Recompute the global-mode running sum u = A·δ from scratch every this many "
                "optimizer steps (0: only at start and on resume)."})
    tail_reference: bool = field(default=False, metadata={
        "help": "dpo/ipo/dpop with a partial capacity (last-block, last:<f>, lora:<r>): score "
                "the reference through the trainable tail only, starting from the policy "
                "forward's input to the first trainable block (the frozen prefix runs once per "
                "batch). Off: TRL's reference pass through the whole model. AuxDPO does this "
                "by itself (aux_fused_reference, aux_share_prefix)."})
    aux_fused_reference: bool = field(default=True, metadata={
        "help": "AuxDPO (global/batch, float32/float64 models): take the loss's reference "
                "log-probs from the offsets' products, so that one pass also gives A_Bᵀu and "
                "keeps what the step's VJP needs. False: a separate reference forward."})
    aux_share_prefix: bool = field(default=True, metadata={
        "help": "With the fused reference and truncated products: take the reference tail's "
                "input from the policy's own forward (a hook on the first trainable block) "
                "instead of running the frozen prefix again. Checked on the first batch; off "
                "by itself when dropout or autocast makes the two differ."})
    aux_truncate_products: bool = field(default=True, metadata={
        "help": "Run the reference Jacobian products through the trainable tail only (first "
                "trainable block onwards) when the model's structure is recognised."})
    aux_keep_reference_graph: bool = field(default=False, metadata={
        "help": "Keep each micro-batch's reference-tail graph from the fused pass until the "
                "offsets' step (saves a tail forward per micro-batch, holds its activations)."})
    aux_jvp: str = field(default="central-difference", metadata={
        "help": "How the global/batch penalty's A_Bᵀu is computed: central-difference (two "
                "extra reference-tail forwards; relative error 1e-4 to 1e-3 in float32, "
                "docs/offsets.md), finite-difference (one forward; up to 3e-2 with LoRA), "
                "forward (exact forward-mode AD, slower) or double-vjp (exact). 16-bit models "
                "use forward."})
    aux_preset: str | None = field(default=None, metadata={
        "help": "notebook: train the authors' notebook objective exactly, in its units: "
                "offsets δ′ inside β, each micro-batch's loss plus notebook_lambda_null·"
                "‖A_Bδ′_B‖² minus notebook_lambda_amp·‖δ′_B‖² (sums over its responses), δ′ in "
                "the model's optimizer (learning rate, schedule, weight decay, gradient "
                "clipping). Sets aux_constraint batch and aux_jvp forward (or keeps "
                "double-vjp); refuses auxdpo's own δ settings (lambda_null, delta_lr, ...) "
                "and more than one process (docs/notebook.md). None: auxdpo's objective."})
    notebook_lambda_null: float = field(default=1.0, metadata={
        "help": "aux_preset notebook: the notebook's null-space weight λ as it is, on "
                "‖A_Bδ′_B‖² summed over the micro-batch's responses."})
    notebook_lambda_amp: float = field(default=0.0, metadata={
        "help": "aux_preset notebook: the notebook's amplitude weight as it is; the "
                "micro-batch's ‖δ′_B‖² times it is subtracted from the loss (rewarded). Set "
                "notebook_delta_cap with it."})
    notebook_delta_cap: float | None = field(default=None, metadata={
        "help": "aux_preset notebook: the notebook's bound on δ′ (δ′ = cap·tanh(raw)), in "
                "its units. None: unbounded."})
    pref_prob_column: str | None = field(default="pref_prob", metadata={
        "help": "Optional dataset column with the probability that chosen ≻ rejected (soft label, "
                "in [0, 1]); used when the column exists."})
    weight_column: str | None = field(default="weight", metadata={
        "help": "Optional dataset column with a per-example weight (e.g. a count n(s, a, a')); "
                "used when the column exists."})
    metrics_file: str | None = field(default="metrics.jsonl", metadata={
        "help": "File in output_dir that receives one JSON line per logging event (None: off)."})

    def __post_init__(self):
        if self.method not in LOSSES:
            raise ValueError(unknown_method_message(self.method, PAPER_METHODS, LOSSES))
        if self.aux_constraint not in AUX_CONSTRAINTS:
            raise ValueError(f"aux_constraint must be one of {AUX_CONSTRAINTS}, "
                             f"got {self.aux_constraint!r}")
        parse_capacity(self.capacity)
        check_notebook_preset(self)  # aux_preset: its checks, aux_constraint/aux_jvp switched
        from auxdpo.offsets.keys import KEYINGS, NULL_WEIGHTS

        for name, allowed in (("aux_offsets", KEYINGS), ("aux_null_weights", NULL_WEIGHTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.delta_lr > 0:
            raise ValueError(f"delta_lr must be > 0, got {self.delta_lr!r}")
        for name in ("lambda_null", "lambda_amp", "dpop_lambda"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.delta_optimizer not in ("adam", "sgd"):
            raise ValueError(f"delta_optimizer must be adam or sgd, got {self.delta_optimizer!r}")
        if self.lambda_amp and self.aux_constraint != "batch":
            raise ValueError("lambda_amp is the batch constraint's amplitude term; set "
                             "aux_constraint: batch or lambda_amp: 0")
        # TRL's loss options: honoured through auxdpo.losses or refused (docs/trainer.md).
        resolve_loss_options(self)
        if self.amp_sign not in (1, -1):
            raise ValueError(f"amp_sign must be +1 or -1, got {self.amp_sign!r}")
        if self.delta_cap is not None and self.delta_cap <= 0:
            raise ValueError(f"delta_cap must be > 0 or None, got {self.delta_cap!r}")
        for name in ("aux_delta_scale", "aux_delta_half_count"):
            if getattr(self, name) is not None:
                check_finite_positive(name, getattr(self, name))
        from auxdpo.offsets.products import JVP_METHODS

        if self.aux_jvp not in JVP_METHODS:
            raise ValueError(f"aux_jvp must be one of {JVP_METHODS}, got {self.aux_jvp!r}")
        check_finite_positive("beta", self.beta)
        if self.recompute_u_every < 0:
            raise ValueError(f"recompute_u_every must be >= 0, got {self.recompute_u_every!r}")
        apply_hardware_defaults(self)  # bf16 only where supported; no deprecated-name warning
        check_report_to(self.report_to)  # a missing extra: one line naming the install command
        super().__post_init__()
