"""Machine-dependent defaults applied before TrainingArguments checks a config.

The README's case (CPU: bf16 off; a bf16 GPU: on; checkpointing under its new name) is tested
in test_readme_snippet.py.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from auxdpo.train import defaults
from auxdpo.train.defaults import apply_hardware_defaults, bf16_available


def probe(**values):
    base = dict(bf16=None, fp16=False, use_cpu=False, dataloader_pin_memory=True,
                activation_checkpointing=None, gradient_checkpointing=None,
                activation_checkpointing_kwargs=None, gradient_checkpointing_kwargs=None)
    return SimpleNamespace(**{**base, **values})


def test_use_cpu_never_has_bf16():
    assert bf16_available(use_cpu=True) is False


@pytest.fixture
def bf16_gpu(monkeypatch):
    """A machine with a bf16-capable accelerator."""
    monkeypatch.setattr(defaults, "bf16_available", lambda use_cpu=False: not use_cpu)
    if getattr(torch, "accelerator", None) is not None:
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_fp16_or_an_explicit_bf16_is_kept(bf16_gpu):
    config = probe(fp16=True)
    apply_hardware_defaults(config)
    assert config.bf16 is False and config.fp16 is True
    for value in (True, False):
        config = probe(bf16=value)
        apply_hardware_defaults(config)
        assert config.bf16 is value


def test_pinned_memory_stays_on_with_an_accelerator_and_off_with_use_cpu(bf16_gpu):
    on_gpu, on_cpu = probe(), probe(use_cpu=True)
    apply_hardware_defaults(on_gpu)
    apply_hardware_defaults(on_cpu)
    assert (on_gpu.bf16, on_gpu.dataloader_pin_memory) == (True, True)
    assert (on_cpu.bf16, on_cpu.dataloader_pin_memory) == (False, False)


def test_checkpointing_kwargs_move_to_the_new_name_but_never_overwrite_it():
    kwargs = {"use_reentrant": False}
    config = probe(gradient_checkpointing=True, gradient_checkpointing_kwargs=kwargs)
    apply_hardware_defaults(config)
    assert (config.activation_checkpointing, config.activation_checkpointing_kwargs) == \
        (True, kwargs)
    assert (config.gradient_checkpointing, config.gradient_checkpointing_kwargs) == (None, None)
    config = probe(activation_checkpointing=False, gradient_checkpointing=True)
    apply_hardware_defaults(config)
    assert (config.activation_checkpointing, config.gradient_checkpointing) == (False, True)


def test_only_the_renamed_attribute_notice_is_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_hardware_defaults(probe(use_cpu=True))
        warnings.warn("`gradient_checkpointing_enable` is deprecated, use ...", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
        warnings.warn("`gradient_checkpointing` is deprecated", UserWarning)  # other category
        warnings.warn("`use_cache` is deprecated", FutureWarning)  # other attribute
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "`gradient_checkpointing` is deprecated"),
        (FutureWarning, "`use_cache` is deprecated")]
