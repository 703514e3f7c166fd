"""``AuxDPOConfig``: TRL's ``DPOConfig`` plus the fields that pick and tune the method.

Switching method is one field (``method``); every method is scored by the shared loss functions
of :mod:`auxdpo.losses`, never by TRL's ``loss_type`` branches. TRL's loss options
(``loss_type``, ``loss_weights``, ``use_weighting``, ``ld_alpha``, ``f_divergence_type``,
``label_smoothing``) are mapped onto those functions or refused (:mod:`auxdpo.train.trl_compat`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

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
from auxdpo.train.reporting import check_report_to
from auxdpo.train.trl_losses import resolve_loss_options

__all__ = ["AUX_CONSTRAINTS", "AuxDPOConfig", "check_notebook_preset", "parse_capacity"]

AUX_CONSTRAINTS = MODES   # AuxOffsets' constraint modes (auxdpo.offsets.constraints)

NOTEBOOK = "notebook"
PRESETS = (NOTEBOOK,)
_NOTEBOOK_FIELDS = ("notebook_lambda_null", "notebook_lambda_amp", "notebook_delta_cap")
# auxdpo's own δ settings, which the preset replaces, and what to do instead.
_REPLACED = {"lambda_null": "set notebook_lambda_null (the notebook's λ as it is)",
             "lambda_amp": "set notebook_lambda_amp (the notebook's λ_amp as it is)",
             "delta_cap": "set notebook_delta_cap (the notebook's cap on δ′)",
             "delta_lr": "δ′ trains at the model's learning_rate",
             "aux_null_weights": "the notebook weighs every response once"}


def _defaults(config) -> dict:
    return {f.name: f.default for f in fields(config) if f.name in _REPLACED
            or f.name in _NOTEBOOK_FIELDS}


def check_notebook_preset(config) -> None:
    """Validate ``aux_preset`` and the ``notebook_*`` keys; with the preset, switch
    ``aux_constraint`` to batch (ValueError naming the option for a combination the preset
    cannot honour; the preset's objective: :mod:`auxdpo.train.notebook`)."""
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
        "help": "Weight of the batch constraint's amplitude term λ_amp·‖δ_B‖² (paper Sec. 7.2): "
                "> 0 shrinks δ, < 0 rewards a non-trivial δ (set delta_cap with it), 0 "
                "disables it."})
    delta_lr: float = field(default=1e-2, metadata={
        "help": "Learning rate of the offsets δ (their own optimizer, not clipped with the model)."})
    delta_cap: float | None = field(default=None, metadata={
        "help": "Optional bound on |δ|: δ = cap·tanh(raw). None leaves δ unbounded."})
    tail_reference: bool = field(default=False, metadata={
        "help": "dpo/ipo/dpop with a partial capacity (last-block, last:<f>, lora:<r>): score "
                "the reference through the trainable tail only, starting from the policy "
                "forward's input to the first trainable block (the frozen prefix runs once per "
                "batch; 0.69–0.84× the step time measured on tiny and small models). Off: TRL's "
                "reference pass through the whole model, step for step. AuxDPO always shares "
                "the prefix where it can."})
    aux_preset: str | None = field(default=None, metadata={
        "help": "notebook: train the authors' notebook objective exactly, in its units: "
                "offsets δ′ inside β, each micro-batch's loss plus notebook_lambda_null·"
                "‖A_Bδ′_B‖² minus notebook_lambda_amp·‖δ′_B‖² (sums over its responses), δ′ in "
                "the model's optimizer (learning rate, schedule, weight decay, gradient "
                "clipping), with exact products. Sets aux_constraint batch; refuses auxdpo's own δ settings (lambda_null, delta_lr, ...) "
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
        check_notebook_preset(self)  # aux_preset: its checks; aux_constraint switched
        from auxdpo.offsets.keys import KEYINGS, NULL_WEIGHTS

        for name, allowed in (("aux_offsets", KEYINGS), ("aux_null_weights", NULL_WEIGHTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.delta_lr > 0:
            raise ValueError(f"delta_lr must be > 0, got {self.delta_lr!r}")
        for name in ("lambda_null", "dpop_lambda"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lambda_amp and self.aux_constraint != "batch":
            raise ValueError("lambda_amp is the batch constraint's amplitude term; set "
                             "aux_constraint: batch or lambda_amp: 0")
        # TRL's loss options: honoured through auxdpo.losses or refused (docs/trainer.md).
        resolve_loss_options(self)
        if not math.isfinite(self.lambda_amp):
            raise ValueError(f"lambda_amp must be a finite number, got {self.lambda_amp!r}")
        if self.delta_cap is not None and self.delta_cap <= 0:
            raise ValueError(f"delta_cap must be > 0 or None, got {self.delta_cap!r}")
        for name in ("aux_delta_scale", "aux_delta_half_count"):
            if getattr(self, name) is not None:
                check_finite_positive(name, getattr(self, name))
        check_finite_positive("beta", self.beta)
        apply_hardware_defaults(self)  # bf16 only where supported; no deprecated-name warning
        check_report_to(self.report_to)  # a missing extra: one line naming the install command
        super().__post_init__()
