"""Defaults that follow the machine, applied before ``TrainingArguments`` checks the config.

TRL's ``DPOConfig`` turns bf16 on whenever fp16 is off, so a config made on a CPU-only machine
fails with "Your setup doesn't support bf16/gpu" unless the user also sets ``use_cpu`` or
``bf16=False``. Here an unset ``bf16`` means "bf16 if this machine's accelerator supports it":
on an Ampere-or-newer GPU it stays on, on CPU it is off (float32), as a TRL user would expect
the README's snippet to run on either.

TRL also sets the deprecated ``gradient_checkpointing`` name, which makes transformers warn on
every run; its value is carried over to ``activation_checkpointing`` (the new name) instead.
PEFT 0.21 and TRL 1.16 still call ``model.is_gradient_checkpointing`` and
``gradient_checkpointing_enable/disable``, which warn on every run: making a config silences
exactly those messages.
Pinned host memory only helps copies to an accelerator, so it is off on a CPU-only machine
(where torch warns about it on every data loader).
"""

from __future__ import annotations

import warnings

__all__ = ["apply_hardware_defaults", "bf16_available"]


def bf16_available(use_cpu: bool = False) -> bool:
    """True when training would run on an accelerator with bf16 support."""
    if use_cpu:
        return False
    from transformers.utils import is_torch_bf16_gpu_available

    return bool(is_torch_bf16_gpu_available())


def _accelerator_available(use_cpu: bool) -> bool:
    if use_cpu:
        return False
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


# transformers' rename notices for what TRL and PEFT call on every run (the reference pass
# turns checkpointing off and on; PEFT reads the flag when it wraps a model).
_RENAMED_ATTRIBUTE = r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated"


def _silence_renamed_attribute_notice() -> None:
    """Narrow and process-wide: only this one message, raised inside PEFT and TRL, which a
    user cannot act on. Installed when a config is made (so it holds inside test harnesses
    that reset the filters between tests)."""
    warnings.filterwarnings("ignore", message=_RENAMED_ATTRIBUTE, category=FutureWarning)


def apply_hardware_defaults(config) -> None:
    """Resolve ``bf16=None`` from the hardware; move checkpointing to its current name."""
    _silence_renamed_attribute_notice()
    if config.bf16 is None:
        config.bf16 = not config.fp16 and bf16_available(config.use_cpu)
    if config.dataloader_pin_memory and not _accelerator_available(config.use_cpu):
        config.dataloader_pin_memory = False
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if getattr(config, new, None) is None and getattr(config, old, None) is not None:
            setattr(config, new, getattr(config, old))
            setattr(config, old, None)  # transformers mirrors the new value back into it
