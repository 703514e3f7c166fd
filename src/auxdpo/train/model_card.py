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

def _arxiv_bibtex(key: str, title: str, authors: str, year: int, arxiv_id: str) -> str:
    return (f"@article{{{key},\n    title   = {{{{{title}}}}},\n    author  = {{{authors}}},\n"
            f"    journal = {{arXiv preprint arXiv:{arxiv_id}}},\n    year    = {year},\n}}")


# TRL's other loss types, each with the paper that introduced it (the sources TRL 1.16's
# DPOTrainer and auxdpo.losses cite); first author "and others".
_TRL_PAPERS = {
    "hinge": ("SLiC-HF: Sequence Likelihood Calibration with Human Feedback", "2305.10425",
              "zhao2023slichf", "Yao Zhao and others", 2023),
    "robust": ("Provably Robust DPO: Aligning Language Models with Noisy Feedback",
               "2403.00409", "chowdhury2024provably", "Sayak Ray Chowdhury and others", 2024),
    "exo_pair": ("Towards Efficient Exact Optimization of Language Model Alignment",
                 "2402.00856", "ji2024towards", "Haozhe Ji and others", 2024),
    "nca_pair": ("Noise Contrastive Alignment of Language Models with Explicit Rewards",
                 "2402.05369", "chen2024noise", "Huayu Chen and others", 2024),
    "bco_pair": ("Binary Classifier Optimization for Large Language Model Alignment",
                 "2404.04656", "jung2024binary", "Seungjae Jung and others", 2024),
    "sppo_hard": ("Self-Play Preference Optimization for Language Model Alignment",
                  "2405.00675", "wu2024self", "Yue Wu and others", 2024),
    "aot": ("Distributional Preference Alignment of LLMs via Optimal Transport", "2406.05882",
            "melnyk2024distributional", "Igor Melnyk and others", 2024),
    "apo_zero": ("Anchored Preference Optimization and Contrastive Revisions: Addressing "
                 "Underspecification in Alignment", "2408.06266", "doosterlinck2024anchored",
                 "Karel D'Oosterlinck and others", 2024),
    "discopop": ("Discovering Preference Optimization Algorithms with and for Large Language "
                 "Models", "2406.08414", "lu2024discovering", "Chris Lu and others", 2024),
}
_SAME_PAPER = {"aot_unpaired": "aot", "apo_down": "apo_zero"}

# method → (title, arXiv id, BibTeX), for every name in auxdpo.losses.LOSSES; AuxDPO's card
# also cites DPO, whose loss it extends; sigmoid_norm is DPO on token-mean log-probs.
PAPERS = {
    "auxdpo": ("Why DPO is a Misspecified Estimator and How to Fix It", "2510.20413",
               _AUXDPO_BIBTEX),
    "dpo": ("Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
            "2305.18290", _DPO_BIBTEX),
    "ipo": ("A General Theoretical Paradigm to Understand Learning from Human Preferences",
            "2310.12036", _IPO_BIBTEX),
    "dpop": ("Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive",
             "2402.13228", _DPOP_BIBTEX),
    **{name: (title, arxiv_id, _arxiv_bibtex(key, title, authors, year, arxiv_id))
       for name, (title, arxiv_id, key, authors, year) in _TRL_PAPERS.items()},
}
PAPERS.update({name: PAPERS[source] for name, source in _SAME_PAPER.items()})
PAPERS["sigmoid_norm"] = PAPERS["dpo"]
_DISPLAY = {"auxdpo": "AuxDPO", "dpo": "DPO", "ipo": "IPO", "dpop": "DPOP",
            "sigmoid_norm": "TRL's sigmoid_norm loss, that is DPO on token-mean log-probs"}
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
             "per_device_train_batch_size", "gradient_accumulation_steps", "aux_offsets",
             "aux_null_weights", "aux_constraint", "lambda_null", "delta_lr", "aux_delta_scale",
             "aux_delta_half_count", "delta_cap", "lambda_amp", "aux_preset",
             "notebook_lambda_null", "notebook_lambda_amp", "notebook_delta_cap", "dpop_lambda")
_AUX_ONLY = {"aux_offsets", "aux_null_weights", "aux_constraint", "lambda_null", "delta_lr",
             "aux_delta_scale", "aux_delta_half_count", "delta_cap", "lambda_amp"}
_BATCH_ONLY = {"lambda_amp"}            # the batch constraint's amplitude term
# shown when the config has a value
_IF_SET = {"delta_cap", "aux_delta_scale", "aux_delta_half_count"}
_NOTEBOOK = {"aux_preset", "notebook_lambda_null", "notebook_lambda_amp", "notebook_delta_cap"}
# with aux_preset: notebook, these are replaced by the notebook_* settings
_NOTEBOOK_REPLACES = _AUX_ONLY - {"aux_constraint", "aux_offsets", "aux_delta_scale",
                                  "aux_delta_half_count"}


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


def _shown_setting(args, key: str) -> bool:
    preset = getattr(args, "aux_preset", None)
    if key in _AUX_ONLY and args.method != "auxdpo" or key in _NOTEBOOK and not preset:
        return False
    if preset and key in _NOTEBOOK_REPLACES:
        return False
    if key in _BATCH_ONLY and getattr(args, "aux_constraint", None) != "batch":
        return False
    if key == "dpop_lambda" and args.method != "dpop":
        return False
    value = getattr(args, key, None)  # getattr: keys a config version may not have
    if key in _IF_SET and value is None:
        return False
    return not (key == "max_steps" and (value is None or value < 0))


def _settings_table(args) -> str:
    rows = [f"| `{key}` | `{getattr(args, key, None)}` |" for key in _SETTINGS
            if _shown_setting(args, key)]
    return "| setting | value |\n|---|---|\n" + "\n".join(rows)


def _offsets_note(args) -> str:
    if args.method != "auxdpo":
        return ""
    keying = getattr(args, "aux_offsets", None)
    keyed = {"response": "one per unique response, shared by every pair it is in",
             "row": "one per pair and side"}.get(keying, f"keyed by {keying}")
    return ("\nAuxDPO's offsets δ (`aux_deltas.safetensors`, `aux_offsets.*`; "
            f"{keyed}) are a training by-product: inference needs only the model files.\n")


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
    shown = _DISPLAY.get(method, f"TRL's {method} loss")
    citations = [f"Cite {shown} as:\n\n"
                 f"```bibtex\n{bibtex}\n```"]
    if method == "auxdpo":
        citations.append(f"AuxDPO extends DPO:\n\n```bibtex\n{PAPERS['dpo'][2]}\n```")
    citations.append(f"The trainer builds on TRL:\n\n```bibtex\n{_TRL_BIBTEX}\n```")
    offsets_note = _offsets_note(args)
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
