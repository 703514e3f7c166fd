"""The README's Python snippet runs as written on CPU and learns (a tiny local model stands in
for the hub name); the config's precision default follows the hardware."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import torch
import train_helpers as th

README = Path(__file__).resolve().parents[2] / "README.md"
HUB_NAME = '"Qwen/Qwen3-0.6B"'


def readme_training_snippet() -> str:
    """The first ```python block after the README's "In Python" sentence."""
    text = README.read_text(encoding="utf-8")
    start = text.index("In Python, AuxDPO replaces")
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match, "README: no python block after 'In Python, AuxDPO replaces'"
    return match.group(1)


def _response_logp(model, tokenizer, prompt: str, response: str) -> float:
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logps = model(input_ids=ids).logits.float().log_softmax(-1)
    targets = ids[0, len(prompt_ids):]
    return logps[0, len(prompt_ids) - 1:-1].gather(-1, targets[:, None]).sum().item()


def _mean_margin(model, tokenizer, rows) -> float:
    return sum(_response_logp(model, tokenizer, r["prompt"], r["chosen"])
               - _response_logp(model, tokenizer, r["prompt"], r["rejected"])
               for r in rows) / len(rows)


def test_readme_snippet_runs_on_cpu_learns_and_loads_back(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    code = readme_training_snippet()
    assert HUB_NAME in code and "learning_rate=" in code and "from_pretrained(\"runs/" in code
    base = tmp_path / "base-model"
    th.model("qwen3", dtype=torch.float32).save_pretrained(base)
    th.tokenizer().save_pretrained(base)
    monkeypatch.chdir(tmp_path)  # the snippet writes runs/auxdpo relative to the working dir
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:  # the process's filters stay in force
        exec(compile(code.replace(HUB_NAME, repr(str(base))), "README.md", "exec"), namespace)
    ours = [w for w in caught if "checkpointing" in str(w.message) or "bf16" in str(w.message)
            or "pin_memory" in str(w.message) or "auxdpo" in (w.filename or "")]
    assert not ours, [str(w.message) for w in ours]
    trainer, policy = namespace["trainer"], namespace["policy"]
    assert trainer.args.bf16 is False and trainer.args.dataloader_pin_memory is False  # CPU
    assert trainer.state.global_step == 6  # 12 pairs, batch 4, 2 epochs
    # 3 answers per prompt in every pair: each answer in 2 pairs, so the offsets act
    first = trainer.state.log_history[0]
    assert first["aux/pairs_per_response"] == 2.0 and first["aux/shared_share"] == 1.0
    rows = list(namespace["prefs"])
    tokenizer = namespace["tokenizer"]
    before = _mean_margin(AutoModelForCausalLM.from_pretrained(base), tokenizer, rows)
    after = _mean_margin(policy.eval(), tokenizer, rows)
    # Learned: the merged policy prefers chosen over rejected by more than the base does
    # (the gap, ~1e-2 nats here, is orders above float32 round-off of these ~10-nat sums).
    assert after - before > 1e-3, (before, after)
    assert trainer.state.log_history[-1]["train_loss"] < math.log(2)
    assert (tmp_path / "runs" / "auxdpo" / "README.md").is_file()


def test_precision_default_follows_the_hardware(tmp_path, monkeypatch):
    from auxdpo.train import defaults
    from auxdpo.train.config import AuxDPOConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated-name notice of ours
        config = AuxDPOConfig(output_dir=str(tmp_path))
    assert config.bf16 is False and config.activation_checkpointing is True
    assert config.gradient_checkpointing is True  # mirrored back by transformers
    assert AuxDPOConfig(output_dir=str(tmp_path), bf16=False).bf16 is False
    monkeypatch.setattr(defaults, "bf16_available", lambda use_cpu=False: not use_cpu)
    # On a bf16-capable accelerator the TRL default (bf16 on) is kept; use_cpu turns it off.
    assert defaults.bf16_available() is True
    probe = type("Probe", (), {"bf16": None, "fp16": False, "use_cpu": True,
                               "dataloader_pin_memory": True,
                               "activation_checkpointing": None,
                               "gradient_checkpointing": True,
                               "activation_checkpointing_kwargs": None,
                               "gradient_checkpointing_kwargs": None})()
    defaults.apply_hardware_defaults(probe)
    assert probe.bf16 is False and probe.dataloader_pin_memory is False
    assert probe.activation_checkpointing is True and probe.gradient_checkpointing is None
    probe.bf16, probe.use_cpu = None, False
    defaults.apply_hardware_defaults(probe)
    assert probe.bf16 is True
