"""AuxDPOTrainer as a drop-in for TRL 1.16's DPOTrainer, checked against TRL's own trainer.

Each comparison builds TRL's DPOTrainer and ours from the same DPOConfig on identical tiny
models, perturbs both policies identically (so policy ≠ reference), and compares the loss, the
gradients and the logged metrics on the same batch.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import train_helpers as H
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from auxdpo.losses import LOSSES, PAPER_METHODS, preference_loss
from auxdpo.train.config import AuxDPOConfig
from auxdpo.train.reference_pass import ReferencePass
from auxdpo.train.trainer import AuxDPOTrainer, PathOptions, frozen_copy
from auxdpo.train.trl_compat import TRL_LOSS_TYPES

_ARGS = dict(beta=0.5, report_to=[], bf16=False, gradient_checkpointing=False, use_cpu=True,
             max_length=64, per_device_train_batch_size=4, learning_rate=1e-2,
             lr_scheduler_type="constant", logging_steps=1, save_strategy="no", seed=0,
             data_seed=0, disable_tqdm=True, dataloader_num_workers=0)


def _trl_args(out_dir, config_class=DPOConfig, **overrides) -> DPOConfig:
    return config_class(output_dir=str(out_dir), **{**_ARGS, **overrides})


def _pair(tmp_path, dtype=torch.float32, data=None, model_fn=None, tokenizer=None,
          ours_method=None, **trl_kw):
    """TRL's trainer and ours from the same DPOConfig (or the AuxDPOConfig of ``ours_method``
    with the same values); both policies then perturbed alike."""
    model_fn = model_fn or (lambda: H.model(dtype=dtype))
    ours_model, trl_model = model_fn(), model_fn()
    data = H.dataset(4) if data is None else data
    tokenizer = tokenizer or H.tokenizer()
    trl = DPOTrainer(trl_model, ref_model=frozen_copy(trl_model),
                     args=_trl_args(tmp_path / "trl", **trl_kw), train_dataset=data,
                     processing_class=tokenizer)
    ours_args = (_trl_args(tmp_path / "ours", **trl_kw) if ours_method is None else
                 _trl_args(tmp_path / "ours", AuxDPOConfig, method=ours_method, **trl_kw))
    ours = AuxDPOTrainer(ours_model, args=ours_args, train_dataset=data,
                         processing_class=tokenizer)
    H.perturb(ours_model, trl_model)
    return ours, trl


def _loss_and_grads(trainer):
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer._prepare_inputs(trainer.data_collator(examples))
    trainer.model.train()
    trainer.model.zero_grad()
    for values in trainer._metrics["train"].values():
        values.clear()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]


def _assert_same_step(ours, trl):
    loss_ours, grads_ours = _loss_and_grads(ours)
    loss_trl, grads_trl = _loss_and_grads(trl)
    assert loss_trl.abs().item() > 1e-3  # a loss that could differ
    torch.testing.assert_close(loss_ours, loss_trl, rtol=1e-6, atol=1e-7 * loss_trl.abs().item())
    scale = max(g.abs().max().item() for g in grads_trl)
    assert scale > 0
    for g_ours, g_trl in zip(grads_ours, grads_trl):
        torch.testing.assert_close(g_ours, g_trl, rtol=1e-5, atol=1e-6 * scale)


# ---- configs ------------------------------------------------------------------------------

def test_args_none_builds_the_default_config(tmp_path, monkeypatch):
    """TRL's default DPOConfig asks for bf16, which this CPU machine lacks: pretend it has it,
    for both, and compare the two defaults field by field."""
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)
    monkeypatch.chdir(tmp_path)
    trainer = AuxDPOTrainer(H.model(), train_dataset=H.dataset(4),
                            processing_class=H.tokenizer())
    assert isinstance(trainer.args, AuxDPOConfig) and trainer.args.method == "auxdpo"
    assert trainer.args.output_dir.endswith("-AuxDPO")
    ours, theirs = trainer.args.to_dict(), DPOConfig("x-DPO").to_dict()
    different = {k for k in theirs if ours.get(k) != theirs[k]}
    assert different <= {"output_dir", "run_name", "logging_dir", "max_length", "bf16",
                         "dataloader_pin_memory"}, different
    # max_length is clamped to the tiny model's position limit (TRL's default exceeds it);
    # an unset bf16 and pin_memory follow the hardware (docs/trainer.md).
    assert ours["max_length"] == min(theirs["max_length"], trainer.model.config.n_positions)


def test_plain_dpoconfig_is_converted_with_a_notice(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="auxdpo.train.trl_compat"):
        ours, trl = _pair(tmp_path, loss_type=["hinge"], beta=0.3)
    assert isinstance(ours.args, AuxDPOConfig)
    assert (ours.args.method, ours.args.beta, ours.args.learning_rate) == ("hinge", 0.3, 1e-2)
    notices = [r.message for r in caplog.records if "converted DPOConfig" in r.message]
    assert len(notices) == 1 and "method='hinge'" in notices[0]
    _assert_same_step(ours, trl)


def test_other_args_are_refused(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(ValueError, match="args must be an AuxDPOConfig or a trl.DPOConfig"):
        AuxDPOTrainer(H.model(), args=TrainingArguments(str(tmp_path)),
                      train_dataset=H.dataset(4), processing_class=H.tokenizer())


# ---- TRL's loss options ------------------------------------------------------------------

CASES = {
    **{name: dict(loss_type=[name]) for name in TRL_LOSS_TYPES if name != "sft"},
    "robust": dict(loss_type=["robust"], label_smoothing=0.2),
    "exo_pair": dict(loss_type=["exo_pair"], label_smoothing=1e-3),
    "aot": dict(loss_type=["aot"], label_smoothing=0.1),
    "aot_unpaired": dict(loss_type=["aot_unpaired"], label_smoothing=0.1),
    "discopop": dict(loss_type=["discopop"], discopop_tau=0.2),
    "rpo": dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]),
    "mpo": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
    "hinge+robust": dict(loss_type=["hinge", "robust"], loss_weights=[0.3, 2.0],
                         label_smoothing=0.1),
    "ipo+sft": dict(loss_type=["ipo", "sft"]),
    "wpo": dict(use_weighting=True),
    "wpo-ipo": dict(loss_type=["ipo"], use_weighting=True),  # TRL fails on WPO + "sft"
    "ld": dict(ld_alpha=0.5),
    "ld-ipo": dict(loss_type=["ipo"], ld_alpha=0.3),
    "ld-sft": dict(loss_type=["sigmoid", "sft"], ld_alpha=0.0),
    "ld-precomputed": dict(loss_type=["ipo"], ld_alpha=0.5, precompute_ref_log_probs=True),
    "forward_kl": dict(f_divergence_type="forward_kl"),
    "js-hinge": dict(loss_type=["hinge"], f_divergence_type="js_divergence"),
    "alpha-sigmoid": dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3),
    "alpha-ipo": dict(loss_type=["ipo"], f_divergence_type="alpha_divergence"),
    "js-discopop": dict(loss_type=["discopop"], f_divergence_type="js_divergence"),
    "forward_kl-sigmoid_norm": dict(loss_type=["sigmoid_norm"], f_divergence_type="forward_kl"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_options_match_trl(case, tmp_path):
    """Every loss_type TRL 1.16 accepts, combinations, WPO, LD-DPO and the f-divergences:
    loss to 1e-6 relative, gradients to 1e-5 (float32, both through TRL's fused LM head)."""
    ours, trl = _pair(tmp_path, **CASES[case])
    _assert_same_step(ours, trl)


@pytest.mark.parametrize("case", ["wpo", "ld", "ld-ipo", "rpo", "js-hinge"])
def test_float64_models_compute_the_extras_from_full_logits(case, tmp_path):
    """float64 models skip the fused head: WPO, LD-DPO and SFT come from the full logits and
    still match TRL's float32-tiled head to float32 precision."""
    ours, trl = _pair(tmp_path, dtype=torch.float64, **CASES[case])
    loss_ours, grads_ours = _loss_and_grads(ours)
    loss_trl, grads_trl = _loss_and_grads(trl)
    torch.testing.assert_close(loss_ours, loss_trl.double(), rtol=1e-6,
                               atol=1e-7 * loss_trl.abs().item())
    scale = max(g.abs().max().item() for g in grads_trl)
    for g_ours, g_trl in zip(grads_ours, grads_trl):
        torch.testing.assert_close(g_ours, g_trl.double(), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("options", [
    dict(use_weighting=True), dict(f_divergence_type="js_divergence"),
    dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])], ids=["wpo", "js", "rpo"])
def test_auxdpo_composes_with_trl_options(options, tmp_path):
    """δ enters the sigmoid margin after the option's transform; at δ = 0 (the first step)
    auxdpo with the option is TRL's sigmoid with it. Fused reference pass: 1e-6 still holds."""
    ours, trl = _pair(tmp_path, ours_method="auxdpo", **options)
    assert ours.offsets is not None and ours.trl_objective
    _assert_same_step(ours, trl)


class _ShiftedReference(ReferencePass):
    """The trainer's own reference pass with log π_ref shifted by −δ/β per row and side."""

    def __init__(self, inner, chosen, rejected, beta):
        self.inner, self.chosen, self.rejected, self.beta = inner, chosen, rejected, beta

    def run(self, inputs, policy):
        ref, result = self.inner.run(inputs, policy)
        index = inputs["aux_index"]
        shift = torch.cat([self.chosen[index], self.rejected[index]]) / self.beta
        return ref - shift.to(ref.dtype), result


@pytest.mark.parametrize("options", [
    dict(), dict(use_weighting=True), dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])],
    ids=["sigmoid", "wpo", "rpo"])
def test_auxdpo_offsets_enter_the_margin_under_trl_options(options, tmp_path):
    """δ ≠ 0: β·h + δ_w − δ_l is β·h′ with the reference log-probs shifted by −δ_w/β (chosen)
    and −δ_l/β (rejected). WPO's weights and RPO's NLL read the policy alone, so auxdpo with
    the option and δ set equals the same trainer at δ = 0 with the shifted reference: loss
    and every gradient. A δ placed anywhere else (a sign, a side, a row, the weights) fails."""
    ours, _ = _pair(tmp_path, ours_method="auxdpo", **options)
    n = len(ours.train_dataset)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ours.offsets.raw.copy_(torch.randn(ours.offsets.raw.shape, generator=generator))
        chosen, rejected = (d.detach().clone() for d in ours.offsets.deltas(torch.arange(n)))
    assert (chosen - rejected).abs().min() > 1e-3                 # every row's margin moves
    loss_delta, grads_delta = _loss_and_grads(ours)
    with torch.no_grad():
        ours.offsets.raw.zero_()
    loss_zero, _ = _loss_and_grads(ours)
    assert (loss_delta - loss_zero).abs() > 1e-3 * loss_zero.abs()  # δ really counts
    ours.reference_passes["train"] = _ShiftedReference(ours.reference_passes["train"], chosen,
                                                       rejected, ours.beta)
    loss_shift, grads_shift = _loss_and_grads(ours)
    torch.testing.assert_close(loss_delta, loss_shift, rtol=1e-6,
                               atol=1e-7 * loss_shift.abs().item())
    scale = max(g.abs().max().item() for g in grads_shift)
    for g_delta, g_shift in zip(grads_delta, grads_shift):
        torch.testing.assert_close(g_delta, g_shift, rtol=1e-5, atol=1e-6 * scale)


def test_default_dpo_path_keeps_the_plain_loss(tmp_path):
    """No TRL option set: the registered loss itself, no combining layer on the hot path."""
    trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo"),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    assert trainer.loss_fn is LOSSES["dpo"] and not trainer.trl_objective


def test_weights_and_sft_are_applied_once_for_auxdpo(tmp_path):
    """auxdpo + sft with a weight column: w·(ℓ_auxdpo + c·NLL), computed by hand (δ = 0)."""
    data = H.dataset(4, weight=[1.0, 2.0, 0.5, 3.0])
    trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="auxdpo",
                                                     loss_type=["sigmoid", "sft"],
                                                     loss_weights=[1.0, 0.25]),
                            train_dataset=data, processing_class=H.tokenizer(),
                            path_options=PathOptions(fuse_reference=False))
    H.perturb(trainer.model)
    examples = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(examples)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        policy = trainer.sequence_logps(trainer.model, {k: batch[k] for k in
                                                        ("input_ids", "attention_mask")},
                                        batch)[0]
        ref = trainer.sequence_logps(trainer.ref_model, {k: batch[k] for k in
                                                         ("input_ids", "attention_mask")},
                                     batch)[0]
        pc, pr = policy.chunk(2)
        rc, rr = ref.chunk(2)
        mask = batch["completion_mask"][:, 1:].chunk(2)[0]
        nll = -pc.sum() / mask.sum()
        pairwise = -torch.nn.functional.logsigmoid(0.5 * ((pc - rc) - (pr - rr)))
        expected = (batch["weight"] * (pairwise + 0.25 * nll)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=0)


REFUSED = [
    (dict(method="dpo", label_smoothing=0.1), "label_smoothing=0.1 is read only by"),
    (dict(method="nca_pair", f_divergence_type="forward_kl"), "f_divergence_type='forward_kl'"),
    (dict(method="dpop", f_divergence_type="js_divergence"), r"not to \['dpop'\]"),
    (dict(method="auxdpo", ld_alpha=0.5), "ld_alpha .* not available with method auxdpo"),
    (dict(method="dpo", ld_alpha=0.5, tail_reference=True), "set tail_reference=False"),
    (dict(method="aot", use_weighting=True), "use_weighting .* aot"),
    (dict(method="auxdpo", loss_type=["hinge"]), "does not include method 'auxdpo'"),
    (dict(method="auxdpo", loss_type=["sigmoid", "hinge"]), "auxdpo combines only with 'sft'"),
    (dict(method="dpo", loss_type=["hinge"]), r"set method to one of \['hinge'\]"),
    (dict(method="ipo", loss_type=["ipo", "sigmoid"]), "mixes token-mean losses"),
    (dict(method="dpo", loss_type=["sft"]), "has no preference loss"),
    (dict(method="exo_pair"), "exo_pair needs label_smoothing"),
    (dict(method="robust", label_smoothing=0.5), "robust needs label_smoothing"),
    (dict(method="dpo", loss_type=["sigmoid", "kto"]), "loss_type 'kto' is unknown"),
    (dict(method="auxdpo", sync_ref_model=True), "sync_ref_model"),
    (dict(method="dpo", loss_type=["sigmoid", "sft"], loss_weights=[1.0]), "loss_weights"),
]


@pytest.mark.parametrize("options, message", REFUSED)
def test_options_that_cannot_be_honoured_are_refused(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        H.config(tmp_path, **options)


@pytest.mark.parametrize("method", sorted(set(LOSSES) - set(PAPER_METHODS)
                                          - {"aot", "aot_unpaired"}))
def test_new_pairwise_losses_take_soft_labels(method):
    """p = 1 is the hard label, p = 0 the swapped pair; weights scale per example."""
    g = torch.Generator().manual_seed(3)
    pw, pl, rw, rl = (torch.randn(6, dtype=torch.float64, generator=g) for _ in range(4))
    kw = {"label_smoothing": 0.1} if method in ("robust", "exo_pair") else {}
    one = torch.ones(6, dtype=torch.float64)
    hard = preference_loss(method, pw, pl, rw, rl, beta=0.7, **kw).losses
    torch.testing.assert_close(
        preference_loss(method, pw, pl, rw, rl, beta=0.7, pref_prob=one, **kw).losses, hard)
    torch.testing.assert_close(
        preference_loss(method, pw, pl, rw, rl, beta=0.7, pref_prob=0 * one, **kw).losses,
        preference_loss(method, pl, pw, rl, rw, beta=0.7, **kw).losses)
    torch.testing.assert_close(
        preference_loss(method, pw, pl, rw, rl, beta=0.7, weight=2 * one, **kw).losses, 2 * hard)


def test_batch_sorted_losses_refuse_per_pair_labels(tmp_path):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="sorts margins across the batch"):
        preference_loss("aot", x, x, x, x, beta=0.1, pref_prob=x)
    trainer = AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="aot"),
                            train_dataset=H.dataset(4, weight=[1.0, 2.0, 1.0, 1.0]),
                            processing_class=H.tokenizer())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with pytest.raises(ValueError, match="weight column cannot weight loss_type aot"):
        trainer.compute_loss(trainer.model, batch)


# ---- metrics ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trl_metrics_are_logged_under_trl_names(dtype, tmp_path):
    """float32 shares TRL's fused head; float64 computes the same metrics from full logits."""
    ours, trl = _pair(tmp_path, dtype=dtype)
    _loss_and_grads(ours)
    _loss_and_grads(trl)
    ours_metrics, trl_metrics = ours._metrics["train"], trl._metrics["train"]
    assert {"entropy", "num_tokens", "logits/chosen", "logits/rejected",
            "mean_token_accuracy"} <= set(trl_metrics)
    rtol = 1e-5 if dtype == torch.float32 else 1e-4
    for key, values in trl_metrics.items():
        assert key in ours_metrics, key
        torch.testing.assert_close(torch.tensor(ours_metrics[key], dtype=torch.float64),
                                   torch.tensor(values, dtype=torch.float64), rtol=rtol,
                                   atol=rtol * max(1.0, abs(values[0])))
    assert "loss/dpo" in ours_metrics


def test_evaluation_logs_trl_metrics_with_trl_values(tmp_path):
    ours, trl = _pair(tmp_path, loss_type=["sigmoid", "sft"], per_device_eval_batch_size=4)
    data = H.dataset(4)
    results = [t.evaluate(data) for t in (ours, trl)]
    timing = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
    keys = set(results[1]) - timing
    assert {"eval_loss", "eval_entropy", "eval_mean_token_accuracy",
            "eval_logits/chosen"} <= keys <= set(results[0])
    for key in sorted(keys):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-5, abs=1e-7), key


def _tiny_moe():
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=99, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                           num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.1,
                           max_position_embeddings=128, pad_token_id=0, eos_token_id=1,
                           bos_token_id=1)
    return MixtralForCausalLM(config).eval()


def test_moe_router_aux_loss_is_added_and_logged(tmp_path):
    state = _tiny_moe().state_dict()

    def model_fn():
        model = _tiny_moe()
        model.load_state_dict(state)
        return model

    ours, trl = _pair(tmp_path, model_fn=model_fn)
    assert ours.aux_loss_enabled and trl.aux_loss_enabled
    _assert_same_step(ours, trl)
    aux_ours, aux_trl = ours._metrics["train"]["aux_loss"], trl._metrics["train"]["aux_loss"]
    assert aux_trl and aux_trl[0] > 0
    torch.testing.assert_close(aux_ours, aux_trl, rtol=1e-6, atol=0)


# ---- the reference of a model TRL already patched -----------------------------------------

def test_reference_of_a_model_that_went_through_trl_stays_frozen(tmp_path):
    model = H.model()
    DPOTrainer(model, ref_model=frozen_copy(model), args=_trl_args(tmp_path / "first"),
               train_dataset=H.dataset(4), processing_class=H.tokenizer())
    assert "forward" in model.__dict__  # TRL's fused LM head patched the instance
    ids = torch.tensor([[5, 9, 13, 2, 40, 41]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    trainer = AuxDPOTrainer(model, args=H.config(tmp_path / "second", method="auxdpo"),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    H.perturb(model, scale=0.2)
    labels = ids.clone()
    with torch.no_grad():
        assert (model(input_ids=ids).logits - before).abs().max() > 1e-3  # the policy moved
        torch.testing.assert_close(trainer.ref_model(input_ids=ids).logits, before,
                                   rtol=1e-12, atol=0)
        fused = trainer.ref_model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        expected = torch.log_softmax(before[:, :-1], -1).gather(2, ids[:, 1:, None])[..., 0]
        # the fused head works in float32 tiles
        torch.testing.assert_close(fused.double(), expected, rtol=1e-5, atol=1e-6)


# ---- data formats -------------------------------------------------------------------------

def _prepared(trainer):
    data = trainer.train_dataset
    return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in data]


def test_rows_without_prompt_use_the_shared_prefix(tmp_path):
    rows = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
            for r in H.rows(4)]
    ours, trl = _pair(tmp_path, data=Dataset.from_list(rows))
    assert _prepared(ours) == _prepared(trl)
    assert all(len(prompt) > 0 for prompt, _, _ in _prepared(ours))
    _assert_same_step(ours, trl)


_TOOL_TEMPLATE = (
    "{% if tools %}tools: {{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% if m['tool_calls'] %}{% for c in m['tool_calls'] %}call {{ c['function']['name'] }}"
    "({{ c['function']['arguments'] }}){% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}")


def _tool_rows():
    tools = json.dumps([{"type": "function", "function": {
        "name": "add", "description": "add numbers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}])
    out = []
    for i in range(4):
        prompt = [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": f"hi {i}"},
                  {"role": "assistant", "content": "hello"},
                  {"role": "user", "content": f"add {i} and {i + 1}"}]
        call = {"type": "function", "function": {"name": "add", "arguments": f"a={i},b={i + 1}"}}
        chosen = [{"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "content": str(2 * i + 1)},
                  {"role": "assistant", "content": f"it is {2 * i + 1}"}]
        rejected = [{"role": "assistant", "content": f"no idea {i}"}]
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "tools": tools})
    return out


def test_multi_turn_tool_calling_rows_match_trl(tmp_path):
    tokenizer = copy.deepcopy(H.tokenizer())
    tokenizer.chat_template = _TOOL_TEMPLATE
    ours, trl = _pair(tmp_path, data=Dataset.from_list(_tool_rows()), tokenizer=tokenizer,
                      max_length=256)
    prepared = _prepared(ours)
    assert prepared == _prepared(trl)
    assert "call add" in tokenizer.decode(prepared[0][1])  # the tool call is scored
    assert "tools: add" in tokenizer.decode(prepared[0][0])  # the tools column reached it
    _assert_same_step(ours, trl)


@pytest.mark.parametrize("message, error", [
    ({"role": "assistant"}, r"message 0 \(assistant\) has neither 'content' nor 'tool_calls'"),
    ({"content": "x"}, "message 0 has no 'role' string"),
    ({"role": "user", "content": [{"type": "text", "text": "x"}]},
     "message 0 content is a list of parts"),
])
def test_bad_messages_are_named(message, error, tmp_path):
    from auxdpo.train.data import RowTable, validate_preference_rows

    rows = [{"prompt": [{"role": "user", "content": "q"}], "chosen": [message],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    with pytest.raises(ValueError, match=r"row 1, field 'chosen': " + error):
        validate_preference_rows(RowTable(rows))


def test_vision_rows_are_refused_clearly(tmp_path):
    rows = [dict(r, images=[[0, 1]]) for r in H.rows(4)]
    # TRL 1.16's words first (its own tests match "vision-related.*vision-language model")
    with pytest.raises(ValueError, match=r"vision-related \(contains \['images'\]\).*"
                                         r"vision-language model"):
        AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="dpo"),
                      train_dataset=Dataset.from_list(rows), processing_class=H.tokenizer())


def test_refusals_shared_with_trl_use_trls_words(tmp_path):
    """Where TRL 1.16's DPOTrainer refuses the same input, TRL's match strings match ours."""
    from datasets import DatasetDict

    def build(data, **overrides):
        AuxDPOTrainer(H.model(), args=H.config(tmp_path, **overrides), train_dataset=data,
                      processing_class=H.tokenizer())

    with pytest.raises(ValueError, match="`train_dataset` is required"):
        build(None, method="dpo")
    for method in ("dpo", "auxdpo"):  # auxdpo refuses any stream, but TRL's words come first
        with pytest.raises(ValueError,
                           match="precompute_ref_log_probs.*not supported with IterableDataset"):
            build(H.dataset(8).to_iterable_dataset(), method=method,
                  precompute_ref_log_probs=True)
    with pytest.raises(TypeError, match="`train_dataset` must be a `Dataset` or "
                                        "`IterableDataset`, got `DatasetDict`"):
        build(DatasetDict({"train": H.dataset(8)}), method="dpo")


# ---- streaming ----------------------------------------------------------------------------

def test_iterable_dataset_trains_dpo_like_trl(tmp_path):
    stream = H.dataset(8).to_iterable_dataset()
    models = [H.model(dtype=torch.float32) for _ in range(2)]
    start = [p.detach().clone() for p in models[0].parameters()]
    # plain SGD: Adam's normalisation would magnify round-off in near-zero gradients
    args = dict(max_steps=3, loss_type=["ipo"], optim="sgd", learning_rate=0.5)
    trl = DPOTrainer(models[1], ref_model=frozen_copy(models[1]),
                     args=_trl_args(tmp_path / "trl", **args), train_dataset=stream,
                     processing_class=H.tokenizer())
    ours = AuxDPOTrainer(models[0], args=_trl_args(tmp_path / "ours", **args),
                         train_dataset=stream, processing_class=H.tokenizer())
    ours.train()
    trl.train()
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (ours, trl)]
    assert len(losses[0]) == 3 and losses[1][0] != losses[1][2]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
    for p0, p_ours, p_trl in zip(start, *(m.parameters() for m in models)):
        step_trl = (p_trl - p0).detach()  # compare the updates, at their own scale
        torch.testing.assert_close((p_ours - p0).detach(), step_trl, rtol=1e-4,
                                   atol=1e-4 * step_trl.abs().max().item())


def test_iterable_dataset_trains_dpop(tmp_path):
    """DPOP (not in TRL) on a stream: two steps, and the policy moves."""
    model = H.model()
    start = [p.detach().clone() for p in model.parameters()]
    trainer = AuxDPOTrainer(model, args=H.config(tmp_path, method="dpop", max_steps=2),
                            train_dataset=H.dataset(8).to_iterable_dataset(),
                            processing_class=H.tokenizer())
    trainer.train()
    assert trainer.state.global_step == 2
    assert max((p - p0).abs().max().item() for p, p0 in zip(model.parameters(), start)) > 1e-4


def test_iterable_dataset_is_refused_for_auxdpo(tmp_path):
    with pytest.raises(ValueError, match="method auxdpo needs a map-style datasets.Dataset"):
        AuxDPOTrainer(H.model(), args=H.config(tmp_path, method="auxdpo"),
                      train_dataset=H.dataset(4).to_iterable_dataset(),
                      processing_class=H.tokenizer())


# ---- precomputed reference log-probs -------------------------------------------------------

def test_precomputed_reference_keeps_no_copy_for_dpo(tmp_path):
    ours, trl = _pair(tmp_path, precompute_ref_log_probs=True)
    assert ours.ref_model is None and trl.ref_model is not None  # TRL's: we passed one
    _assert_same_step(ours, trl)


def _auxdpo_run(out_dir, ref_model=None, model=None):
    model = model or H.model()
    config = H.config(out_dir, method="auxdpo", capacity="last-block", max_steps=3,
                      precompute_ref_log_probs=True, delta_lr=0.5)
    trainer = AuxDPOTrainer(model, ref_model=ref_model, args=config,
                            train_dataset=H.dataset(4), processing_class=H.tokenizer(),
                            path_options=PathOptions(jvp="forward"))
    trainer.train()
    deltas = trainer.offsets.deltas(torch.arange(4))
    return trainer, [p.detach().clone() for p in model.parameters()], deltas


def test_precomputed_reference_auxdpo_keeps_only_the_trainable_tensors(tmp_path):
    """With precomputed log-probs AuxDPO needs θ₀ only for its products: a snapshot of the
    trainable tensors replaces the frozen copy, and training is the same (float64, 1e-10)."""
    with_copy = H.model()
    trainer_a, params_a, deltas_a = _auxdpo_run(tmp_path / "a", ref_model=frozen_copy(with_copy),
                                                model=with_copy)
    trainer_b, params_b, deltas_b = _auxdpo_run(tmp_path / "b")
    assert trainer_a.ref_model is not None and trainer_b.ref_model is None
    snapshot = trainer_b.offsets.products.reference
    assert set(snapshot) == set(trainer_b.capacity_plan.trainable) != set(
        dict(trainer_b.model.named_parameters()))
    live = dict(trainer_b.model.named_parameters())          # θ₀ is a copy, not the model's
    assert all(t.data_ptr() != live[name].data_ptr() for name, t in snapshot.items())
    assert "ref_chosen_logps" in trainer_b.train_dataset.column_names
    assert deltas_b[0].abs().max() > 1e-4  # δ moved
    for a, b in zip((*params_a, *deltas_a), (*params_b, *deltas_b)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
