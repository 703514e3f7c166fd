"""The model card (``README.md``) written into every saved run folder, checkpoint and hub push.

TRL's card names the base model only when its ``_name_or_path`` is a hub id (a local folder or
an in-memory model renders as ``[None](https://huggingface.co/None)``) and always cites the DPO
paper. This card names the base model the trainer was given (hub id as a link, local folder as
a path, in-memory model said as such), cites the paper of the method that was trained, lists
the settings that define the run, and shows how to load the folder back.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["PAPERS", "base_model_id", "record_adapter_base", "render_model_card",
           "write_model_card"]

_AUXDPO_BIBTEX = """@article{gopalan2025misspecified,
    title   = {{Why DPO is a Misspecified Estimator and How to Fix It}},
    author  = {Aditya Gopalan and Sayak Ray Chowdhury and Debangshu Banerjee},
    journal = {arXiv preprint arXiv:2510.20413},
    year    = 2025,
}"""
_DPO_BIBTEX = """@inproceedings{rafailov2023direct,
    title     = {{Direct Preference Optimization: Your Language Model is Secretly a Reward Model}},
    author    = {Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning
                 and Stefano Ermon and Chelsea Finn},
    booktitle = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
    year      = 2023,
}"""
_IPO_BIBTEX = """@inproceedings{azar2024general,
    title     = {{A General Theoretical Paradigm to Understand Learning from Human Preferences}},
    author    = {Mohammad Gheshlaghi Azar and Zhaohan Daniel Guo and Bilal Piot and Remi Munos
                 and Mark Rowland and Michal Valko and Daniele Calandriello},
    booktitle = {International Conference on Artificial Intelligence and Statistics (AISTATS)},
    year      = 2024,
}"""
_DPOP_BIBTEX = """@article{pal2024smaug,
    title   = {{Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive}},
    author  = {Arka Pal and Deep Karkhanis and Samuel Dooley and Manley Roberts and Siddartha Naidu
               and Colin White},
    journal = {arXiv preprint arXiv:2402.13228},
    year    = 2024,
}"""

# method → (title, arXiv id, BibTeX); AuxDPO's card also cites DPO, whose loss it extends.
PAPERS = {
    "auxdpo": ("Why DPO is a Misspecified Estimator and How to Fix It", "2510.20413",
               _AUXDPO_BIBTEX),
    "dpo": ("Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
            "2305.18290", _DPO_BIBTEX),
    "ipo": ("A General Theoretical Paradigm to Understand Learning from Human Preferences",
            "2310.12036", _IPO_BIBTEX),
    "dpop": ("Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive",
             "2402.13228", _DPOP_BIBTEX),
}
_DISPLAY = {"auxdpo": "AuxDPO", "dpo": "DPO", "ipo": "IPO", "dpop": "DPOP"}
_TRL_BIBTEX = """@software{vonwerra2020trl,
    title   = {{TRL: Transformers Reinforcement Learning}},
    author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward
               and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif
               and Gallouédec, Quentin},
    url     = {https://github.com/huggingface/trl},
    year    = {2020},
}"""

# The settings that define a run, in the order a reader looks for them.
_SETTINGS = ("method", "capacity", "beta", "learning_rate", "num_train_epochs", "max_steps",
             "per_device_train_batch_size", "gradient_accumulation_steps", "aux_constraint",
             "lambda_null", "lambda_amp", "amp_sign", "delta_lr", "delta_cap", "aux_delta_scale",
             "aux_delta_half_count", "aux_preset", "notebook_lambda_null", "notebook_lambda_amp", "notebook_delta_cap",
             "dpop_lambda")
_AUX_ONLY = {"aux_constraint", "lambda_null", "lambda_amp", "amp_sign", "delta_lr", "delta_cap",
             "aux_delta_scale", "aux_delta_half_count"}
# the notebook preset reads them
_KEPT_BY_PRESET = {"aux_constraint", "aux_delta_scale", "aux_delta_half_count"}
_NOTEBOOK = {"aux_preset", "notebook_lambda_null", "notebook_lambda_amp", "notebook_delta_cap"}


def base_model_id(model) -> str | None:
    """The name the base model was loaded under (hub id or local path), or None.

    A string is its own name; a model (or PEFT wrapper) names itself through
    ``config._name_or_path``, which transformers fills on ``from_pretrained`` and leaves empty
    for a model built from a config.
    """
    if isinstance(model, str):
        return model or None
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(name) if name else None


def record_adapter_base(model, name: str | None) -> None:
    """Name the base model in a LoRA adapter's config when PEFT found none (``tiny-*`` names
    stay out: loaders would look for them on the hub)."""
    from accelerate.utils import is_peft_model

    if name and not name.startswith("tiny-") and is_peft_model(model):
        for adapter in model.peft_config.values():
            adapter.base_model_name_or_path = adapter.base_model_name_or_path or name


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not os.path.exists(name) and not name.startswith(("/", ".", "~")) \
        and not name.startswith("tiny-")


def _base_sentence(name: str | None) -> str:
    if _is_hub_id(name):
        return f"This model is a fine-tuned version of [{name}](https://huggingface.co/{name})"
    if name and name.startswith("tiny-"):
        return (f"This model is a fine-tuned version of `{name}`, a random-weight model built by "
                "`auxdpo.train.tiny` (not on the hub)")
    if name:
        return f"This model is a fine-tuned version of the local model `{name}`"
    return ("This model is a fine-tuned version of a model built in memory (it recorded no hub "
            "name or path)")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _settings_table(args) -> str:
    rows = []
    for key in _SETTINGS:
        preset = getattr(args, "aux_preset", None)
        if key in _AUX_ONLY and args.method != "auxdpo" or key in _NOTEBOOK and not preset:
            continue
        if preset and key in _AUX_ONLY - _KEPT_BY_PRESET:
            continue              # replaced by the notebook_* settings
        if key == "dpop_lambda" and args.method != "dpop":
            continue
        value = getattr(args, key, None)
        if key == "max_steps" and (value is None or value < 0):
            continue
        rows.append(f"| `{key}` | `{value}` |")
    return "| setting | value |\n|---|---|\n" + "\n".join(rows)


def _load_snippet(is_adapter: bool, base: str | None) -> str:
    if is_adapter:
        base_arg = f'"{base}"' if base else "BASE_MODEL  # the model this adapter was trained on"
        return ("from peft import PeftModel\n"
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"base = AutoModelForCausalLM.from_pretrained({base_arg})\n"
                'model = PeftModel.from_pretrained(base, "PATH_OR_HUB_ID")  # LoRA adapter\n'
                "model = model.merge_and_unload()  # optional: a plain model with the adapter in\n"
                'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID")')
    return ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("PATH_OR_HUB_ID")\n'
            'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID")')


def render_model_card(args, *, base_model: str | None, model_name: str, is_adapter: bool,
                      dataset_name: str | None = None, tags=(), steps: int | None = None) -> str:
    """The card's text: YAML metadata, what was trained from what, how to load, citations."""
    from huggingface_hub import ModelCardData

    method = args.method
    title, paper_id, bibtex = PAPERS[method]
    hub_base = base_model if _is_hub_id(base_model) else None
    all_tags = ["generated_from_trainer", "trl", "auxdpo", method, *tags]
    if is_adapter:
        all_tags += ["lora"] + ([f"base_model:adapter:{hub_base}"] if hub_base else [])
    data = ModelCardData(base_model=hub_base, datasets=dataset_name, model_name=model_name,
                         library_name="peft" if is_adapter else "transformers",
                         tags=list(dict.fromkeys(all_tags)))
    on_data = f" on the [{dataset_name}](https://huggingface.co/datasets/{dataset_name}) dataset" \
        if dataset_name else ""
    trained = f" for {steps} optimizer steps" if steps else ""
    shown = _DISPLAY.get(method, method)
    citations = [f"Cite {shown} as:\n\n"
                 f"```bibtex\n{bibtex}\n```"]
    if method == "auxdpo":
        citations.append(f"AuxDPO extends DPO:\n\n```bibtex\n{PAPERS['dpo'][2]}\n```")
    citations.append(f"The trainer builds on TRL:\n\n```bibtex\n{_TRL_BIBTEX}\n```")
    offsets_note = ("\nAuxDPO's per-pair offsets δ (`aux_deltas.safetensors`, `aux_offsets.*`) "
                    "are a training by-product: inference needs only the model files.\n"
                    if method == "auxdpo" else "")
    kind = "a LoRA adapter" if is_adapter else "the full model weights"
    return f"""---
{data.to_yaml()}
---

# Model card for {model_name}

{_base_sentence(base_model)}{on_data}.
It was trained with {shown} (method introduced in [{title}](https://huggingface.co/papers/{paper_id})){trained}, using auxdpo {_package_version("auxdpo")} on [TRL](https://github.com/huggingface/trl) {_package_version("trl")}.

## Training settings

{_settings_table(args)}

## Load it

This folder holds {kind} and the tokenizer.

```python
{_load_snippet(is_adapter, base_model if base_model and not base_model.startswith("tiny-") else None)}
```
{offsets_note}
### Framework versions

- auxdpo: {_package_version("auxdpo")}
- TRL: {_package_version("trl")}
- Transformers: {_package_version("transformers")}
- PEFT: {_package_version("peft")}
- PyTorch: {_package_version("torch")}

## Citations

{chr(10).join(c + chr(10) for c in citations)}"""


def write_model_card(trainer, folder: str | os.PathLike | None = None, *,
                     model_name: str | None = None, dataset_name: str | None = None,
                     tags=None) -> Path | None:
    """Write ``README.md`` into ``folder`` (default ``output_dir``) on the saving process."""
    from accelerate.utils import is_peft_model

    if not trainer.is_world_process_zero():
        return None
    folder = Path(folder or trainer.args.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(tags, str):
        tags = [tags]
    model = trainer.accelerator.unwrap_model(trainer.model)
    text = render_model_card(
        trainer.args, base_model=getattr(trainer, "base_model_id", None) or base_model_id(model),
        model_name=model_name or (trainer.args.hub_model_id or "").split("/")[-1]
        or Path(trainer.args.output_dir).name,
        is_adapter=is_peft_model(model), dataset_name=dataset_name, tags=tags or (),
        steps=trainer.state.global_step or None)
    path = folder / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
