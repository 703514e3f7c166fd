"""Our methods against TRL's own trainer and against hand computations on the same batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import train_helpers as H
from trl import DPOConfig, DPOTrainer

from auxdpo.train.trainer import AuxDPOTrainer, PathOptions, frozen_copy
from tolerance import assert_close

TRL_LOSS = {"dpo": "sigmoid", "ipo": "ipo"}


def _pair(method, tmp_path, dtype, arch="gpt2"):
    """Our trainer and TRL's on identical model copies; the policies perturbed identically."""
    ours_model, trl_model = H.model(arch, dtype=dtype), H.model(arch, dtype=dtype)
    data = H.dataset(4)
    ours = AuxDPOTrainer(ours_model, args=H.config(tmp_path / "a", method=method),
                         train_dataset=data, processing_class=H.tokenizer())
    trl_args = DPOConfig(output_dir=str(tmp_path / "b"), loss_type=[TRL_LOSS[method]], beta=0.5,
                         report_to=[], bf16=False, gradient_checkpointing=False, use_cpu=True,
                         max_length=64)
    trl = DPOTrainer(trl_model, ref_model=frozen_copy(trl_model), args=trl_args,
                     train_dataset=data, processing_class=H.tokenizer())
    H.perturb(ours_model, trl_model)
    return ours, trl


def _loss_and_grads(trainer):
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(examples)
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize("method", ["dpo", "ipo"])
def test_matches_trl_on_same_batch(method, tmp_path):
    """float32, both through TRL's fused LM head: DPO = TRL sigmoid, IPO = TRL ipo."""
    ours, trl = _pair(method, tmp_path, torch.float32)
    loss_ours, grads_ours = _loss_and_grads(ours)
    loss_trl, grads_trl = _loss_and_grads(trl)
    assert loss_ours.item() > 0.05  # a non-trivial loss: policy ≠ reference
    # float32 forward/backward by two implementations: 100 float32 roundings at each scale
    # for the loss, 1e3 for the gradients (measured: 8).
    assert_close(loss_ours, loss_trl, ops=100)
    for g_ours, g_trl in zip(grads_ours, grads_trl):
        assert_close(g_ours, g_trl, ops=1e3)


@pytest.mark.parametrize("method", ["dpo", "ipo"])
def test_float64_exact_path_matches_trl_to_float32_precision(method, tmp_path):
    """float64 models skip the (float32) fused head; TRL's result agrees to float32 precision."""
    ours, trl = _pair(method, tmp_path, torch.float64)
    loss_ours, grads_ours = _loss_and_grads(ours)
    loss_trl, grads_trl = _loss_and_grads(trl)
    # TRL's float32 head bounds the agreement: 100 float32 roundings at each scale.
    assert_close(loss_ours, loss_trl.to(torch.float64), ops=100, dtype=torch.float32)
    for g_ours, g_trl in zip(grads_ours, grads_trl):
        assert_close(g_ours, g_trl.to(g_ours.dtype), ops=100, dtype=torch.float32)


def _brute_force_logps(model, batch, average=False):
    """Per-token log-softmax loop over the completion tokens of every row, in float64."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    values = []
    for row in range(batch["input_ids"].shape[0]):
        terms = []
        for t in range(1, batch["input_ids"].shape[1]):
            if batch["completion_mask"][row, t]:
                log_probs = torch.log_softmax(logits[row, t - 1], dim=-1)
                terms.append(log_probs[batch["input_ids"][row, t]])
        total = torch.stack(terms).sum()
        values.append(total / len(terms) if average else total)
    return torch.stack(values)


def _ours(method, tmp_path, **overrides):
    model = H.model()
    trainer = AuxDPOTrainer(model, args=H.config(tmp_path, method=method, **overrides),
                            train_dataset=H.dataset(4), processing_class=H.tokenizer())
    H.perturb(model, scale=0.1, seed=1)
    return trainer


def test_dpop_matches_hand_computation(tmp_path):
    """DPOP: −mean log σ(β(h − λ·max(0, ref_w − pol_w))), log-probs by brute force."""
    trainer = _ours("dpop", tmp_path, dpop_lambda=3.0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        pol = _brute_force_logps(trainer.model, batch)
        ref = _brute_force_logps(trainer.ref_model, batch)
        loss = trainer.compute_loss(trainer.model, batch)
    pw, pl, rw, rl = pol[:4], pol[4:], ref[:4], ref[4:]
    assert torch.any(rw > pw) and torch.any(rw < pw)  # both sides of the max(0, ·) hinge
    h = (pw - rw) - (pl - rl)
    expected = -F.logsigmoid(0.5 * (h - 3.0 * torch.clamp(rw - pw, min=0))).mean()
    assert_close(loss, expected, ops=100, scale=float(pol.abs().max()))   # err ∝ log-probs


def test_ipo_averages_and_dpo_sums_response_tokens(tmp_path):
    trainer = _ours("ipo", tmp_path)
    assert trainer.args.logp_average is True
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        pol = _brute_force_logps(trainer.model, batch, average=True)
        ref = _brute_force_logps(trainer.ref_model, batch, average=True)
        loss = trainer.compute_loss(trainer.model, batch)
    h = (pol[:4] - ref[:4]) - (pol[4:] - ref[4:])
    assert_close(loss, ((h - 1 / (2 * 0.5)) ** 2).mean(), ops=100,
                 scale=float(pol.abs().max()))


def test_auxdpo_with_zero_offsets_equals_dpo_loss_and_grads(tmp_path):
    """δ = 0 (its initial value) and λ = 0: AuxDPO's loss and model gradients are DPO's."""
    dpo = _ours("dpo", tmp_path / "d")
    aux = _ours("auxdpo", tmp_path / "a", lambda_null=0.0)
    loss_dpo, grads_dpo = _loss_and_grads(dpo)
    loss_aux, grads_aux = _loss_and_grads(aux)
    assert loss_dpo.item() != pytest.approx(math.log(2), abs=1e-3)
    # Not the same graph (AuxDPO adds δ and a zero penalty): round-off of one backward.
    assert_close(loss_aux, loss_dpo, ops=100)
    for g_aux, g_dpo in zip(grads_aux, grads_dpo):
        assert_close(g_aux, g_dpo, ops=100)


def test_soft_labels_and_weights_reach_the_loss(tmp_path):
    """Loss = mean_i w_i·[p_i·ℓ(w≻l) + (1−p_i)·ℓ(l≻w)] with the columns' p and w."""
    p, w = [1.0, 0.25, 0.5, 0.0], [1.0, 2.0, 0.5, 3.0]
    model = H.model()
    trainer = AuxDPOTrainer(model, args=H.config(tmp_path, method="dpo"),
                            train_dataset=H.dataset(4, pref_prob=p, weight=w),
                            processing_class=H.tokenizer())
    H.perturb(model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert set(batch) >= {"pref_prob", "weight", "aux_index"}
    with torch.no_grad():
        pol = _brute_force_logps(trainer.model, batch)
        ref = _brute_force_logps(trainer.ref_model, batch)
        loss = trainer.compute_loss(trainer.model, batch)
    h = (pol[:4] - ref[:4]) - (pol[4:] - ref[4:])
    pt, wt = torch.tensor(p, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
    per_example = pt * -F.logsigmoid(0.5 * h) + (1 - pt) * -F.logsigmoid(-0.5 * h)
    assert_close(loss, (wt * per_example).mean(), ops=100, scale=float(pol.abs().max()))


@pytest.mark.parametrize("batch, accumulation", [(4, 1), (2, 2)])
def test_offsets_get_the_loss_gradient_unclipped(tmp_path, batch, accumulation):
    """One step of plain SGD on δ with λ = 0 from δ = 0: the DPO part's δ-gradient is
    ∂/∂δ_w mean_i −log σ(βh_i + δ_w,i − δ_l,i) = −σ(−βh_i)/G, so δ_w,i = η·σ(−βh_i)/G and
    δ_l,i = −δ_w,i, whatever the model's gradient clipping (max_grad_norm = 1e-8 here)."""
    eta, beta = 0.7, 0.5
    model = H.model()
    trainer = AuxDPOTrainer(
        model, args=H.config(tmp_path, method="auxdpo", lambda_null=0.0, delta_lr=eta,
                             max_steps=1, max_grad_norm=1e-8,
                             per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation),
        train_dataset=H.dataset(4), processing_class=H.tokenizer(),
        path_options=PathOptions(delta_optimizer="sgd"))
    H.perturb(model, scale=0.1, seed=1)
    batch_all = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        pol = _brute_force_logps(trainer.model, batch_all)
        ref = _brute_force_logps(trainer.ref_model, batch_all)
    h = (pol[:4] - ref[:4]) - (pol[4:] - ref[4:])
    trainer.train()
    expected = eta * torch.sigmoid(-beta * h) / 4
    table = trainer.offsets.table()
    assert expected.min() > 0.01
    assert_close(table[:, 0], expected, ops=100)
    assert_close(table[:, 1], -expected, ops=100)
