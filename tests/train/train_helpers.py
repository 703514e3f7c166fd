"""Shared builders for the trainer tests: tiny models, a character tokenizer, small data sets."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402

from auxdpo.train.config import AuxDPOConfig  # noqa: E402
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model  # noqa: E402

torch.set_num_threads(1)  # the test machine is shared: avoid OpenMP spin under contention
datasets.disable_progress_bars()
datasets.disable_caching()

_TOKENIZER = None


def tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = build_char_tokenizer()
    return _TOKENIZER


def rows(n: int = 8, **extra_columns) -> list[dict]:
    """n distinct preference rows with short prompts and responses of varied lengths."""
    out = []
    for i in range(n):
        row = {"prompt": f"q{i}: add {i}+{i % 3}? ", "chosen": f"{2 * i + i % 3}" + "!" * (i % 2),
               "rejected": f"no {i + 7}" + "." * (i % 3)}
        for key, values in extra_columns.items():
            row[key] = values[i]
        out.append(row)
    return out


def dataset(n: int = 8, **extra_columns) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows(n, **extra_columns))


def model(arch: str = "gpt2", dtype=torch.float64, num_layers: int = 2, hidden: int = 16,
          seed: int = 0):
    return build_tiny_model(arch, num_layers=num_layers, hidden_size=hidden, dtype=dtype,
                            seed=seed)


def config(out_dir, **overrides) -> AuxDPOConfig:
    """An AuxDPOConfig for CPU tests: no bf16, no checkpointing, no shuffling noise, no logs."""
    values = dict(output_dir=str(out_dir), per_device_train_batch_size=4, max_steps=2,
                  report_to=[], bf16=False, gradient_checkpointing=False, save_strategy="no",
                  use_cpu=True, beta=0.5, learning_rate=1e-2, logging_steps=1, seed=0,
                  data_seed=0, max_length=64, lr_scheduler_type="constant",
                  dataloader_num_workers=0, disable_tqdm=True, metrics_file=None)
    values.update(overrides)
    return AuxDPOConfig(**values)


def perturb(*models, scale: float = 0.05, seed: int = 1) -> None:
    """Add the same random perturbation to the parameters of several identical models."""
    generator = torch.Generator().manual_seed(seed)
    params = [list(m.parameters()) for m in models]
    with torch.no_grad():
        for group in zip(*params):
            noise = scale * torch.randn(group[0].shape, generator=generator,
                                        dtype=torch.float64).to(group[0].dtype)
            for p in group:
                p.add_(noise)
