"""The trainer's defaults for AuxDPO's offsets that a sweep decides: change them here, and only
here (``AuxDPOConfig``, its help texts and ``auxdpo train --help`` read them).

``DEFAULT_DELTA_SCALE``   σ of the Gaussian prior on the offsets, in reward units
                          (``aux_delta_scale``; None: no prior). docs/finite_sample.md,
                          "The prior on the offsets".
``DEFAULT_NULL_WEIGHTS``  the constraint's slot weights ω (``aux_null_weights``: prompt,
                          multiplicity or reference; docs/finite_sample.md).
"""

from __future__ import annotations

__all__ = ["DEFAULT_DELTA_SCALE", "DEFAULT_NULL_WEIGHTS"]

DEFAULT_DELTA_SCALE: float | None = 1.0
DEFAULT_NULL_WEIGHTS = "prompt"
