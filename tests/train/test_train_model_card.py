"""Run folders a user can load and share: the model card names the base model and the method's
paper, a LoRA adapter records its base, and the folder loads back (``from_pretrained``,
``PeftModel``, ``merge_and_unload``) — also after ``push_to_hub`` (upload mocked to a folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import train_helpers as th

from auxdpo.train.model_card import base_model_id, render_model_card
from auxdpo.train.trainer import AuxDPOTrainer


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A tiny llama saved like a hub download: a local folder with config and tokenizer."""
    folder = tmp_path_factory.mktemp("base") / "tiny-base"
    th.model("llama", dtype=torch.float32).save_pretrained(folder)
    th.tokenizer().save_pretrained(folder)
    return str(folder)


def _train(source, out, **overrides):
    config = th.config(out, **overrides)
    trainer = AuxDPOTrainer(source, args=config, train_dataset=th.dataset(8),
                            processing_class=th.tokenizer())
    trainer.train()
    trainer.save_model(str(out))
    return trainer


def _logits(model, tokenizer=None):
    ids = torch.tensor([th.tokenizer()("q1: add 1+1? 2")["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_card_names_local_base_and_cites_auxdpo_and_loads_back(tmp_path, base_folder):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    trainer = _train(base_folder, out, capacity="last-block")
    card = (out / "README.md").read_text()
    assert "[None]" not in card and "huggingface.co/None" not in card
    assert f"the local model `{base_folder}`" in card
    assert "Why DPO is a Misspecified Estimator and How to Fix It" in card
    assert "Gopalan and Sayak Ray Chowdhury and Debangshu Banerjee" in card
    assert "huggingface.co/papers/2510.20413" in card
    assert "| `aux_constraint` | `global` |" in card and "library_name: transformers" in card
    loaded = AutoModelForCausalLM.from_pretrained(out)
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    torch.testing.assert_close(_logits(loaded), _logits(trained), rtol=0, atol=0)
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    assert not torch.allclose(_logits(base), _logits(loaded))  # training changed the weights


def test_lora_adapter_records_base_and_loads_merges(tmp_path, base_folder):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    trainer = _train(base_folder, out, capacity="lora:2")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == base_folder
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and f'from_pretrained("{base_folder}")' in card
    trained = _logits(trainer.accelerator.unwrap_model(trainer.model).eval())
    scale = trained.abs().max().item()
    auto = AutoPeftModelForCausalLM.from_pretrained(out).eval()  # base from adapter_config
    torch.testing.assert_close(_logits(auto), trained, rtol=0, atol=1e-6 * scale)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder),
                                           out).eval()
    torch.testing.assert_close(_logits(peft_model), trained, rtol=0, atol=1e-6 * scale)
    merged = peft_model.merge_and_unload()
    assert not hasattr(merged, "peft_config")
    # Merging folds B·A into W: equal up to float32 round-off of the changed summation order.
    torch.testing.assert_close(_logits(merged), trained, rtol=0, atol=1e-5 * scale)
    plain = _logits(AutoModelForCausalLM.from_pretrained(base_folder))
    assert (plain - trained).abs().max() > 1e-4 * scale  # the adapter is not a no-op


def test_in_memory_model_card_says_so_and_dpo_cites_dpo(tmp_path):
    model = th.model("llama", dtype=torch.float32)
    assert base_model_id(model) is None
    out = tmp_path / "dpo"
    _train(model, out, method="dpo", capacity="lora:2")
    card = (out / "README.md").read_text()
    assert "built in memory" in card and "[None]" not in card
    assert "2305.18290" in card and "2510.20413" not in card
    assert "aux_constraint" not in card  # AuxDPO-only settings stay out of a DPO card


def test_hub_base_is_linked_and_tagged():
    args = SimpleNamespace(method="auxdpo", capacity="lora:8", beta=0.1, learning_rate=5e-6,
                           num_train_epochs=2, max_steps=-1, per_device_train_batch_size=4,
                           gradient_accumulation_steps=8, aux_constraint="batch",
                           lambda_null=1.0, lambda_amp=-0.1, delta_lr=1e-2,
                           delta_cap=None, aux_delta_scale=0.5, dpop_lambda=50.0)
    card = render_model_card(args, base_model="Qwen/Qwen3-0.6B", model_name="run",
                             is_adapter=True, dataset_name="HuggingFaceH4/ultrafeedback_binarized")
    assert "[Qwen/Qwen3-0.6B](https://huggingface.co/Qwen/Qwen3-0.6B)" in card
    assert "base_model: Qwen/Qwen3-0.6B" in card and "base_model:adapter:Qwen/Qwen3-0.6B" in card
    assert "datasets/HuggingFaceH4/ultrafeedback_binarized" in card
    assert "| `lambda_amp` | `-0.1` |" in card and "max_steps" not in card
    assert "| `aux_delta_scale` | `0.5` |" in card
    tiny = render_model_card(args, base_model="tiny-llama", model_name="run", is_adapter=False)
    assert "`tiny-llama`, a random-weight model" in tiny and "huggingface.co/tiny" not in tiny


class _FolderHub:
    """Stands in for ``huggingface_hub.HfApi``: "uploads" copy the folder into ``root``."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))
        return SimpleNamespace(repo_id=f"user/{repo_id}")

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), **kwargs):
        self.calls.append(("upload_folder", repo_id))
        target = self.root / repo_id
        shutil.copytree(folder_path, target,
                        ignore=shutil.ignore_patterns(*ignore_patterns), dirs_exist_ok=True)
        return SimpleNamespace(repo_id=repo_id)


def test_push_to_hub_uploads_card_and_loadable_adapter(tmp_path, base_folder, monkeypatch):
    import transformers.trainer as hf_trainer
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hub = _FolderHub(tmp_path / "hub")
    monkeypatch.setattr(hf_trainer, "hf_api", lambda *a, **k: hub)
    out = tmp_path / "pushed"
    trainer = _train(base_folder, out, capacity="lora:2", save_strategy="steps", save_steps=2)
    trainer.push_to_hub(commit_message="test")
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    repo = tmp_path / "hub" / "user" / "pushed"
    assert not list(repo.glob("checkpoint-*"))  # checkpoints stay local
    card = (repo / "README.md").read_text()
    assert "2510.20413" in card and f"`{base_folder}`" in card and "model_name: pushed" in card
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder),
                                       repo).eval()
    trained = _logits(trainer.accelerator.unwrap_model(trainer.model).eval())
    torch.testing.assert_close(_logits(loaded), trained, rtol=0,
                               atol=1e-6 * trained.abs().max().item())


def _card_args(**overrides):
    values = dict(method="auxdpo", capacity="full", beta=0.1, learning_rate=1e-5,
                  num_train_epochs=1, max_steps=-1, per_device_train_batch_size=2,
                  gradient_accumulation_steps=1, aux_offsets="response",
                  aux_null_weights="prompt", aux_constraint="global", lambda_null=1.0,
                  lambda_amp=0.0, delta_lr=1e-2, delta_cap=None, dpop_lambda=50.0)
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.mark.parametrize("method", sorted(__import__("auxdpo.losses").losses.LOSSES))
def test_every_registered_loss_saves_a_card_citing_its_paper(tmp_path, method):
    """TRL's loss types used to train and then fail at the final save (no paper for them)."""
    from auxdpo.train.model_card import PAPERS

    extra = {"label_smoothing": 1e-3} if method == "exo_pair" else {}
    trainer = AuxDPOTrainer(th.model(dtype=torch.float32),
                            args=th.config(tmp_path, method=method, **extra),
                            train_dataset=th.dataset(4), processing_class=th.tokenizer())
    trainer.save_model(str(tmp_path))
    card = (tmp_path / "README.md").read_text()
    title, paper_id, bibtex = PAPERS[method]
    assert f"huggingface.co/papers/{paper_id}" in card and title in card
    assert bibtex in card and f"| `method` | `{method}` |" in card


def test_card_lists_auxdpos_settings_that_matter():
    card = render_model_card(_card_args(), base_model=None, model_name="r", is_adapter=False)
    for row in ("| `aux_offsets` | `response` |", "| `aux_null_weights` | `prompt` |",
                "| `aux_constraint` | `global` |", "| `lambda_null` | `1.0` |",
                "| `delta_lr` | `0.01` |"):
        assert row in card
    assert "lambda_amp" not in card  # batch mode only
    assert "delta_cap" not in card and "aux_delta_scale" not in card  # not set
    assert "per-pair" not in card and "one per unique response" in card
    batch = render_model_card(_card_args(aux_constraint="batch", lambda_amp=-0.1,
                                         aux_offsets="row", aux_delta_scale=0.5),
                              base_model=None, model_name="r", is_adapter=False)
    assert "| `lambda_amp` | `-0.1` |" in batch
    assert "| `aux_delta_scale` | `0.5` |" in batch and "one per pair and side" in batch
