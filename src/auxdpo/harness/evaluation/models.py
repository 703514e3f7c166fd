"""Loading models for ``auxdpo eval`` and the protocol: hub names, local folders, ``auxdpo
train`` run folders (full models or PEFT adapters) and the offline ``tiny-*`` models.

Torch/transformers are imported inside the functions. Weights load with safetensors only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

__all__ = ["ModelSpec", "LoadedModel", "device_for", "load_base_model", "base_spec_of_run",
           "load_model_for_eval"]

RUN_CONFIG = "auxdpo_config.yaml"  # written by ``auxdpo train`` (auxdpo.train.run)


@dataclass
class ModelSpec:
    """The base (reference) model every run starts from."""

    name_or_path: str = field(default="tiny-llama", metadata={
        "help": "Hub name, local folder, or tiny-gpt2/tiny-llama/tiny-qwen2/tiny-qwen3 (random "
                "weights, offline character tokenizer: smoke runs only)."})
    tiny_num_layers: int = field(default=4, metadata={"help": "Layers of a tiny-* model."})
    tiny_hidden_size: int = field(default=32, metadata={"help": "Width of a tiny-* model."})
    tiny_seed: int = field(default=0, metadata={"help": "Seed of a tiny-* model's weights."})
    dtype: str = field(default="float32", metadata={
        "help": "Weights dtype when loading: float32, bfloat16 or float16."})

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class LoadedModel:
    """A model in eval mode on its device, its tokenizer, and where it came from."""

    model: object
    tokenizer: object
    source: str


def device_for():
    """CUDA when available, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(spec: ModelSpec, device=None) -> LoadedModel:
    """The recipe's base model (a fresh copy on every call), in eval mode on ``device``."""
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model, is_tiny_name

    device = device or device_for()
    if is_tiny_name(spec.name_or_path):
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(spec.name_or_path[len("tiny-"):], vocab_size=len(tokenizer),
                                 num_layers=spec.tiny_num_layers,
                                 hidden_size=spec.tiny_hidden_size, max_positions=4096,
                                 dtype=_dtype(spec.dtype), seed=spec.tiny_seed)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(spec.name_or_path, dtype=_dtype(spec.dtype),
                                                     use_safetensors=True)
        tokenizer = _tokenizer(spec.name_or_path)
    return LoadedModel(model.to(device).eval(), tokenizer, spec.name_or_path)


def base_spec_of_run(path: str) -> ModelSpec | None:
    """The base model of an ``auxdpo train`` run folder (from its resolved config), or of a
    PEFT adapter folder (``base_model_name_or_path``); None when neither names one."""
    from auxdpo.yamlio import load_yaml

    config_file = os.path.join(path, RUN_CONFIG)
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as handle:
            run = (load_yaml(handle) or {}).get("run", {})
        if run.get("model_name_or_path"):
            return ModelSpec(name_or_path=run["model_name_or_path"],
                             tiny_num_layers=run.get("tiny_num_layers", 2),
                             tiny_hidden_size=run.get("tiny_hidden_size", 32),
                             tiny_seed=run.get("tiny_seed", 0))
    adapter_file = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_file):
        with open(adapter_file, encoding="utf-8") as handle:
            base = json.load(handle).get("base_model_name_or_path")
        if base:
            return ModelSpec(name_or_path=base)
    return None


def load_model_for_eval(path: str, dtype: str = "float32", device=None,
                        tiny: ModelSpec | None = None) -> LoadedModel:
    """A policy to score: ``tiny-*`` name, hub name, model folder, or PEFT adapter folder
    (loaded on top of its base model, see :func:`base_spec_of_run`)."""
    from auxdpo.train.tiny import is_tiny_name

    device = device or device_for()
    if is_tiny_name(path):
        spec = tiny or ModelSpec(name_or_path=path, tiny_num_layers=2)
        return load_base_model(ModelSpec(**{**spec.__dict__, "name_or_path": path,
                                            "dtype": dtype}), device)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import PeftModel

        base_spec = base_spec_of_run(path)
        if base_spec is None:
            raise ValueError(f"{path}: PEFT adapter names no base model")
        base_spec.dtype = dtype
        base = load_base_model(base_spec, device)
        model = PeftModel.from_pretrained(base.model, path).to(device).eval()
        tokenizer = _tokenizer(path) if os.path.isfile(
            os.path.join(path, "tokenizer_config.json")) else base.tokenizer
        return LoadedModel(model, tokenizer, path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: no config.json or adapter_config.json (not a model "
                                f"or adapter folder)")
    return load_base_model(ModelSpec(name_or_path=path, dtype=dtype), device)
