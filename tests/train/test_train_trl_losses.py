"""TRL's loss_type / loss_weights mapped onto registered losses, and the objective built.

The refusals of options that cannot be honoured, through AuxDPOConfig, are tested in
test_train_trl_compat.py (REFUSED); training with them matches TRL there too.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auxdpo.losses import LOSSES
from auxdpo.train.trl_losses import (
    TRL_LOSS_TYPES,
    build_objective,
    loss_types_of,
    method_of,
    objective_terms,
    resolve_loss_options,
)
from auxdpo.train.trl_objective import TRLObjective


def config(**values):
    base = dict(method="dpo", loss_type=["sigmoid"], loss_weights=None, logp_average=None,
                f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5,
                label_smoothing=0.0, use_weighting=False, ld_alpha=None, tail_reference=False,
                discopop_tau=0.05, sync_ref_model=False)
    return SimpleNamespace(**{**base, **values})


def test_loss_types_and_the_method_they_name():
    assert loss_types_of(config(loss_type="hinge")) == ["hinge"]
    assert loss_types_of(config(loss_type=("sft", "ipo"))) == ["sft", "ipo"]
    assert method_of(["sigmoid", "sft"]) == "dpo"
    assert method_of(["sft", "nca_pair", "hinge"]) == "nca_pair"
    assert method_of(["sft"]) == "dpo"
    assert "sigmoid" in TRL_LOSS_TYPES and "sft" in TRL_LOSS_TYPES


@pytest.mark.parametrize("values, terms, sft", [
    (dict(method="ipo"), [("ipo", 1.0)], 0.0),  # the default loss_type means the method
    (dict(method="auxdpo", loss_weights=[2]), [("auxdpo", 2.0)], 0.0),
    (dict(method="auxdpo", loss_type=["sigmoid", "sft"], loss_weights=[1, 0.25]),
     [("auxdpo", 1.0)], 0.25),
    (dict(method="hinge", loss_type=["hinge", "sft", "sigmoid", "sft"],
          loss_weights=[1.0, 0.5, 2.0, 0.125]), [("hinge", 1.0), ("dpo", 2.0)], 0.625),
    (dict(method="dpop", loss_type=["dpop", "sigmoid"]), [("dpop", 1.0), ("dpo", 1.0)], 0.0),
])
def test_objective_terms(values, terms, sft):
    assert objective_terms(config(**values)) == (terms, sft)


def test_token_mean_default_follows_the_losses():
    for values, averaged in ((dict(method="ipo"), True), (dict(method="dpo"), False),
                             (dict(method="sigmoid_norm", loss_type=["sigmoid_norm", "sft"]),
                              True)):
        probe = config(**values)
        resolve_loss_options(probe)
        assert probe.logp_average is averaged
    probe = config(method="ipo", logp_average=False)  # an explicit choice stays
    resolve_loss_options(probe)
    assert probe.logp_average is False


@pytest.mark.parametrize("values, message", [
    (dict(ld_alpha=1.5), "ld_alpha must lie in [0, 1], got 1.5"),
    (dict(ld_alpha=-0.1), "ld_alpha must lie in [0, 1], got -0.1"),
    (dict(method="discopop", discopop_tau=0.0), "discopop_tau must be > 0, got 0.0"),
    (dict(method="robust", label_smoothing=-0.1),
     "loss_type robust needs label_smoothing in [0, 0.5), got -0.1"),
])
def test_out_of_range_options_are_named(values, message):
    with pytest.raises(ValueError) as exc:
        resolve_loss_options(config(**values))
    assert str(exc.value) == message


def test_the_default_path_is_the_registered_loss_and_extras_build_an_objective():
    for method in ("dpo", "auxdpo", "ipo"):
        assert build_objective(config(method=method)) == (LOSSES[method], False)
    objective, is_objective = build_objective(config(
        method="auxdpo", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.25],
        logp_average=False))
    assert is_objective and objective == TRLObjective(
        terms=(("auxdpo", 1.0),), sft_weight=0.25, use_weighting=False,
        f_divergence="reverse_kl", f_alpha=0.5, average=False,
        hyper={"label_smoothing": 0.0, "discopop_tau": 0.05})
    for values in (dict(method="hinge"), dict(use_weighting=True),
                   dict(f_divergence_type="js_divergence"), dict(loss_weights=[0.5])):
        objective, is_objective = build_objective(config(**values))
        assert is_objective and isinstance(objective, TRLObjective)
    assert build_objective(config(method="robust", label_smoothing=0.1))[0].hyper == {
        "label_smoothing": 0.1, "discopop_tau": 0.05}
