"""The trainer's defaults for AuxDPO's offsets that a sweep decides: change them here, and only
here (``AuxDPOConfig``, its help texts and ``auxdpo train --help`` read them).

``DEFAULT_DELTA_SCALE``   σ of the Gaussian prior on the offsets, in reward units
                          (``aux_delta_scale``; None: no prior). docs/finite_sample.md,
                          "The prior on the offsets".
``DEFAULT_DELTA_HALF_COUNT``  c½ of the count-dependent prior: an offset of a response in c
                          pair sides gets variance σ²·c/(c + c½) (``aux_delta_half_count``;
                          None: σ² for every offset).
``DEFAULT_NULL_WEIGHTS``  the constraint's slot weights ω (``aux_null_weights``: prompt,
                          multiplicity or reference; docs/finite_sample.md).
"""

from __future__ import annotations

__all__ = ["DEFAULT_DELTA_HALF_COUNT", "DEFAULT_DELTA_SCALE", "DEFAULT_NULL_WEIGHTS"]

DEFAULT_DELTA_SCALE: float | None = 2.0
DEFAULT_DELTA_HALF_COUNT: float | None = 16.0
DEFAULT_NULL_WEIGHTS = "prompt"
