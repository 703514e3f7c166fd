"""The config keys ``auxdpo train --help`` lists, with their defaults and help strings.

Built when the help is asked for (it imports TRL for the field metadata), so that the top-level
``auxdpo --help`` stays light.
"""

from __future__ import annotations

import textwrap
from dataclasses import MISSING, fields

__all__ = ["COMMON_TRL_KEYS", "config_keys_help"]

# The TRL/transformers fields most runs set; every other DPOConfig field is accepted as well.
COMMON_TRL_KEYS = ("output_dir", "beta", "learning_rate", "num_train_epochs", "max_steps",
                   "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                   "bf16", "gradient_checkpointing", "logging_steps", "save_strategy",
                   "save_steps", "report_to", "seed", "resume_from_checkpoint")


# What auxdpo does differently with a TRL key, appended to its help.
_NOTES = {"output_dir": "auxdpo train's default: runs/train.",
          "bf16": "Unset: on where the GPU supports bf16, off on CPU.",
          "report_to": "tensorboard / wandb: pip install 'auxdpo[tensorboard]' / "
                       "'auxdpo[wandb]'.",
          "learning_rate": "TRL's default is tiny: set your own."}


def _default(field) -> str:
    if field.default is not MISSING:
        return repr(field.default)
    if field.default_factory is not MISSING:  # type: ignore[misc]
        return repr(field.default_factory())  # type: ignore[misc]
    return "required"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


def _section(title: str, items, width: int, short: bool = False) -> list[str]:
    lines = [title]
    for field in items:
        help_text = " ".join(field.metadata.get("help", "").split())
        help_text = _first_sentence(help_text) if short else help_text
        if short and field.name in _NOTES:
            help_text += " " + _NOTES[field.name]
        head = f"  {field.name} (default {_default(field)})"
        lines.append(head)
        lines += textwrap.wrap(help_text, width, initial_indent=" " * 6,
                               subsequent_indent=" " * 6)
    return lines


def config_keys_help(width: int = 88) -> str:
    """Three sections: what to load, what auxdpo adds to DPOConfig, common TRL keys."""
    from trl import DPOConfig

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.run_arguments import RunArguments

    inherited = {f.name for f in fields(DPOConfig)}
    ours = [f for f in fields(AuxDPOConfig) if f.init and f.name not in inherited]
    by_name = {f.name: f for f in fields(AuxDPOConfig)}
    common = [by_name[name] for name in COMMON_TRL_KEYS if name in by_name]
    lines = _section("what to load (RunArguments):", fields(RunArguments), width)
    lines += [""] + _section("method and offsets (added to TRL's DPOConfig):", ours, width)
    lines += [""] + _section("common TRL / transformers keys (every DPOConfig field is "
                             "accepted):", common, width, short=True)
    return "\n".join(lines)
