"""The trainer: DPO, IPO, DPOP and AuxDPO on any Hugging Face causal LM, as a TRL drop-in.

    from auxdpo.train import AuxDPOConfig, AuxDPOTrainer

Names load lazily (importing ``auxdpo.train`` does not import torch or TRL), so that
``auxdpo --help`` stays fast.
"""

from __future__ import annotations

import importlib

__all__ = ["AuxDPOConfig", "AuxDPOTrainer", "apply_capacity", "run_tiny_demo"]

_HOMES = {"AuxDPOConfig": "auxdpo.train.config", "AuxDPOTrainer": "auxdpo.train.trainer",
          "apply_capacity": "auxdpo.train.capacity", "run_tiny_demo": "auxdpo.train.demo"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'auxdpo.train' has no attribute {name!r}")
