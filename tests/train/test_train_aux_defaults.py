"""The sweep-decided defaults of AuxDPO's offsets: the trainer and the oracle read the same.

`auxdpo oracle` measures "what users get" only if its plain run uses AuxDPOConfig's defaults;
both take them from auxdpo.train.aux_defaults (the config's own read is tested in
test_train_config.py).
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from auxdpo.cli import build_parser
from auxdpo.harness.oracle.cells import method_variants
from auxdpo.harness.oracle.cli import build_config
from auxdpo.harness.oracle.sampling import NULL_WEIGHTS
from auxdpo.train.aux_defaults import (
    DEFAULT_DELTA_HALF_COUNT,
    DEFAULT_DELTA_SCALE,
    DEFAULT_NULL_WEIGHTS,
)
from auxdpo.train.config import AuxDPOConfig


def oracle_config(*flags):
    return build_config(build_parser().parse_args(["oracle", "--regime", "finite", *flags]))


def test_a_plain_oracle_run_uses_the_trainers_defaults():
    trainer = {f.name: f.default for f in fields(AuxDPOConfig)}
    finite = oracle_config().finite
    assert finite.null_weights == [trainer["aux_null_weights"]] == [DEFAULT_NULL_WEIGHTS]
    assert finite.delta_scales == [trainer["aux_delta_scale"]] == [DEFAULT_DELTA_SCALE]
    assert finite.delta_half_counts == [trainer["aux_delta_half_count"]] == \
        [DEFAULT_DELTA_HALF_COUNT]
    assert DEFAULT_NULL_WEIGHTS in NULL_WEIGHTS
    assert DEFAULT_DELTA_SCALE is None or DEFAULT_DELTA_SCALE > 0
    assert DEFAULT_DELTA_HALF_COUNT is None or DEFAULT_DELTA_HALF_COUNT > 0


@pytest.mark.parametrize("flag, other, option", [
    ("--aux-delta-scale", "0.25", "delta_scale"),
    ("--aux-delta-half-count", "4", "half_count"),
    ("--aux-delta-half-count", "none", "half_count"),   # named auxdpo-const
    ("--aux-null-weights", "multiplicity", "weights")])
def test_in_a_sweep_only_the_trainers_defaults_are_plain_auxdpo(flag, other, option):
    """A sweep over one option names its variants apart, except the one with the trainer's
    defaults: that one is "auxdpo", what a user gets from AuxDPOConfig()."""
    defaults = {"delta_scale": DEFAULT_DELTA_SCALE, "half_count": DEFAULT_DELTA_HALF_COUNT,
                "weights": DEFAULT_NULL_WEIGHTS}
    text = {None: "none"}.get(defaults[option], str(defaults[option]))
    variants = [v for v in method_variants(oracle_config(flag, other, text)) if v[1] == "auxdpo"]
    assert len(variants) == 2
    plain = [options for name, _, options in variants if name == "auxdpo"]
    assert len(plain) == 1
    assert {k: plain[0][k] for k in defaults} == defaults
