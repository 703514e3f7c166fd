"""TRL 1.16's loss options mapped onto :mod:`auxdpo.losses`: which registered losses a
config's ``loss_type``/``loss_weights`` name (:func:`objective_terms`), the checks that refuse
what cannot be honoured (:func:`resolve_loss_options`, run by ``AuxDPOConfig.__post_init__``)
and the loss callable a trainer uses (:func:`build_objective`).

Kept apart from :mod:`auxdpo.train.trl_compat` (config conversion, data checks), which needs
the config class: the config needs this module, and this module needs neither.
"""

from __future__ import annotations

from auxdpo.losses import LOSSES, PAPER_METHODS
from auxdpo.train.trl_objective import AVERAGED, MARGIN_LOSSES, TRLObjective

__all__ = ["TRL_LOSS_TYPES", "build_objective", "loss_types_of", "method_of", "objective_terms",
           "resolve_loss_options"]

# Every loss_type TRL 1.16 accepts (trl/trainer/dpo_trainer.py); "sigmoid" is our "dpo".
TRL_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
                  "sigmoid_norm")
_SMOOTHED = ("robust", "exo_pair", "aot", "aot_unpaired")  # losses that read label_smoothing
_SORTED = ("aot", "aot_unpaired")                          # batch-sorted: no per-pair weight


def loss_types_of(config) -> list[str]:
    value = config.loss_type
    return [value] if isinstance(value, str) else list(value)


def method_of(loss_types: list[str]) -> str:
    """The method a DPOConfig's loss_type names: its first preference loss."""
    for name in loss_types:
        if name != "sft":
            return "dpo" if name == "sigmoid" else name
    return "dpo"


def objective_terms(config) -> tuple[list[tuple[str, float]], float]:
    """``([(LOSSES name, weight), ...], sft weight)`` for a config; ValueError if inconsistent.

    The default ``loss_type=["sigmoid"]`` means the config's ``method``. Otherwise each entry
    maps to a registered loss ("sigmoid" → ``dpo``, or ``auxdpo`` when that is the method) and
    ``method`` must be one of them.
    """
    loss_types = loss_types_of(config)
    weights = list(config.loss_weights or [1.0] * len(loss_types))
    if len(weights) != len(loss_types):
        raise ValueError(f"loss_weights has {len(weights)} entries for {len(loss_types)} "
                         "loss_type entries; give one weight per loss type")
    if loss_types == ["sigmoid"]:
        return [(config.method, float(weights[0]))], 0.0
    known = set(TRL_LOSS_TYPES) | set(LOSSES)
    terms, sft = [], 0.0
    for name, weight in zip(loss_types, weights):
        if name not in known:
            raise ValueError(f"loss_type {name!r} is unknown; TRL 1.16's are "
                             f"{', '.join(TRL_LOSS_TYPES)}")
        if name == "sft":
            sft += float(weight)
        elif name == "sigmoid":
            terms.append(("auxdpo" if config.method == "auxdpo" else "dpo", float(weight)))
        else:
            terms.append((name, float(weight)))
    names = [n for n, _ in terms]
    if not terms:
        raise ValueError(f"loss_type {loss_types} has no preference loss: 'sft' alone is "
                         "supervised fine-tuning (use trl's SFTTrainer), or add e.g. 'sigmoid'")
    if config.method not in names:
        raise ValueError(f"loss_type {loss_types} does not include method {config.method!r}: "
                         f"set method to one of {sorted(set(names))}, or leave loss_type at "
                         "['sigmoid'] to train the method alone")
    if config.method == "auxdpo" and set(names) != {"auxdpo"}:
        raise ValueError(f"method auxdpo combines only with 'sft' in loss_type (δ enters the DPO "
                         f"sigmoid margin), got {loss_types}; use loss_type ['sigmoid', 'sft'] "
                         "or another method")
    return terms, sft


def resolve_loss_options(config) -> None:
    """Check TRL's loss options against the method; set ``logp_average``'s default.

    Called by ``AuxDPOConfig.__post_init__``: what cannot be honoured is refused here, at
    construction, with the option's name and the alternative.
    """
    terms, _ = objective_terms(config)
    names = {n for n, _ in terms}
    averaged = names & AVERAGED
    if averaged and names - AVERAGED:
        raise ValueError(f"loss_type mixes token-mean losses {sorted(averaged)} with summed "
                         f"ones {sorted(names - AVERAGED)}; one run scores one log-prob "
                         "reduction (logp_average), so train them separately")
    if config.logp_average is None:
        config.logp_average = bool(averaged)
    if config.f_divergence_type != "reverse_kl":
        other = sorted(names - MARGIN_LOSSES)
        if other:
            raise ValueError(f"f_divergence_type={config.f_divergence_type!r} applies to the "
                             f"margin losses ({', '.join(sorted(MARGIN_LOSSES))}), not to "
                             f"{other}; use f_divergence_type='reverse_kl' with them")
    smoothing = config.label_smoothing
    if smoothing and not names & set(_SMOOTHED):
        raise ValueError(f"label_smoothing={smoothing} is read only by loss_type "
                         f"{', '.join(_SMOOTHED)} in TRL 1.16 (its sigmoid loss ignores it); "
                         "for conservative DPO give each row pref_prob = 1 − ε (column "
                         "pref_prob_column), or use loss_type 'robust'")
    if "exo_pair" in names and not 0 < smoothing < 1:
        raise ValueError("loss_type exo_pair needs label_smoothing in (0, 1); the EXO paper "
                         "uses 1e-3")
    if "robust" in names and not 0 <= smoothing < 0.5:
        raise ValueError(f"loss_type robust needs label_smoothing in [0, 0.5), got {smoothing}")
    if config.use_weighting and names & set(_SORTED):
        raise ValueError("use_weighting (WPO) cannot weight loss_type aot/aot_unpaired: they "
                         "sort margins across the batch, so a weight has no pair to attach to")
    if config.ld_alpha is not None:
        if not 0.0 <= config.ld_alpha <= 1.0:
            raise ValueError(f"ld_alpha must lie in [0, 1], got {config.ld_alpha}")
        if config.method == "auxdpo":
            raise ValueError("ld_alpha (LD-DPO) is not available with method auxdpo: the offsets' "
                             "null-space products differentiate the plain summed log-probs, and "
                             "LD-DPO reweights them; use ld_alpha=None")
        if config.tail_reference:
            raise ValueError("ld_alpha (LD-DPO) needs the whole-model reference pass; set "
                             "tail_reference=False")
    if config.discopop_tau <= 0:
        raise ValueError(f"discopop_tau must be > 0, got {config.discopop_tau}")
    if config.sync_ref_model and config.method == "auxdpo":
        raise ValueError("sync_ref_model (TR-DPO) moves the reference, but AuxDPO's null space is "
                         "that of the fixed reference θ₀; use sync_ref_model=False or method dpo")


def build_objective(config):
    """``(loss callable, is_objective)``: the registered loss itself on the default path (the
    method alone, no TRL extras), else a :class:`TRLObjective` that combines them."""
    terms, sft = objective_terms(config)
    plain = (len(terms) == 1 and terms[0] == (config.method, 1.0) and not sft
             and config.method in PAPER_METHODS and not config.use_weighting
             and config.f_divergence_type == "reverse_kl")
    if plain:
        return LOSSES[config.method], False
    hyper = {"label_smoothing": config.label_smoothing, "discopop_tau": config.discopop_tau}
    return TRLObjective(terms=tuple(terms), sft_weight=sft, use_weighting=config.use_weighting,
                        f_divergence=config.f_divergence_type,
                        f_alpha=config.f_alpha_divergence_coef,
                        average=bool(config.logp_average), hyper=hyper), True
