"""``aux_preset: notebook`` against an independent plain-PyTorch implementation of the
notebook's objective (docs/notebook.md): per micro-batch B,

    mean_i −log σ(β·(h_i + δ′_w,i − δ′_l,i)) + λ_nb·‖A_B δ′_B‖² − λ_amp·‖δ′_B‖²
      [+ mean_i (τβ²/2)·(δ′_w,i² + δ′_l,i²) with aux_delta_scale σ = τ^(-1/2), every response
       once in these rows],

A_B the explicit Jacobian of the batch's response log-probs at θ₀, δ′ = cap·tanh(raw) with
raw in the model's AdamW (same learning rate, linear schedule, weight decay, clipping over the
model and raw), two micro-batches per optimizer step, each divided by the accumulation steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import train_helpers as H

from auxdpo.train.trainer import AuxDPOTrainer, PathOptions
from tolerance import assert_close

BETA, LR, WEIGHT_DECAY, CLIP = 0.5, 5e-2, 0.1, 0.3
LAMBDA_NULL, LAMBDA_AMP, CAP = 0.2, 0.05, 1.5
SCALE = 0.1                                          # the prior's σ (reward units), when on
ROWS, BATCH, ACCUMULATION, STEPS = 4, 2, 2, 3     # one optimizer step per epoch
REL = 1e-12                                          # relative agreement asked for
OPS = REL / torch.finfo(torch.float64).eps           # tests/tolerance.py's unit


def _config(out_dir, **overrides):
    values = dict(aux_preset="notebook", aux_offsets="row", beta=BETA, aux_delta_scale=None,
                  aux_delta_half_count=None,
                  notebook_lambda_null=LAMBDA_NULL, notebook_lambda_amp=LAMBDA_AMP,
                  notebook_delta_cap=CAP, per_device_train_batch_size=BATCH,
                  gradient_accumulation_steps=ACCUMULATION, max_steps=STEPS, learning_rate=LR,
                  weight_decay=WEIGHT_DECAY, max_grad_norm=CLIP, lr_scheduler_type="linear",
                  warmup_steps=0, train_sampling_strategy="sequential")
    values.update(overrides)
    return H.config(out_dir, **values)


# ---- the independent implementation -------------------------------------------------------

def _responses(dataset) -> list[tuple[list[int], int]]:
    """(prompt + response ids, response length) of every row's chosen, then rejected, side:
    the order (0w, 0l, 1w, 1l, ...) of one δ′ per pair side."""
    return [(row["prompt_ids"] + row[side], len(row[side]))
            for row in dataset for side in ("chosen_ids", "rejected_ids")]


def _logp(model, ids: list[int], length: int) -> torch.Tensor:
    """Σ of the response tokens' log-probs, one unpadded sequence."""
    tokens = torch.tensor([ids])
    logits = model(input_ids=tokens).logits[0, :-1]
    token_logps = torch.log_softmax(logits, dim=-1).gather(1, tokens[0, 1:, None])[:, 0]
    return token_logps[-length:].sum()


def _jacobian(model, responses) -> torch.Tensor:
    """A (d × 2n): column j = ∇_θ log π_θ₀(response j), one backward pass per response."""
    params = list(model.parameters())
    columns = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(_logp(model, *r), params)])
               for r in responses]
    return torch.stack(columns, dim=1)


def _objective(policy, reference_logps, jacobian, raw, responses, rows, variant="notebook",
               scale=None):
    """The notebook's micro-batch loss on dataset rows ``rows`` (``variant`` mutates it, to
    show that the comparison would catch the mutation); the prior of σ = ``scale`` on β·δ′
    (each response in one pair: c = 1) is part of the penalty."""
    delta = CAP * torch.tanh(raw)
    terms = []
    for i in rows:
        h = ((_logp(policy, *responses[2 * i]) - reference_logps[2 * i])
             - (_logp(policy, *responses[2 * i + 1]) - reference_logps[2 * i + 1]))
        offsets = delta[2 * i] - delta[2 * i + 1]
        margin = BETA * h + offsets if variant == "outside_beta" else BETA * (h + offsets)
        terms.append(-F.logsigmoid(margin))
    columns = [2 * i for i in rows] + [2 * i + 1 for i in rows]
    batch_delta = delta[columns]
    penalty = (LAMBDA_NULL * (jacobian[:, columns] @ batch_delta).pow(2).sum()
               - LAMBDA_AMP * batch_delta.pow(2).sum())
    if scale is not None:                  # (1/|B|) Σ_i (τ/2)((βδ′_w,i)² + (βδ′_l,i)²)
        penalty = penalty + (BETA * batch_delta).pow(2).sum() / (2 * scale**2 * len(rows))
    return torch.stack(terms).mean(), penalty


def _reference_run(initial, responses, variant="notebook", scale=None):
    """Plain PyTorch: AdamW over [model, raw], linear schedule, clipping, accumulation."""
    reference, policy = copy.deepcopy(initial), copy.deepcopy(initial)
    with torch.no_grad():
        reference_logps = torch.stack([_logp(reference, *r) for r in responses])
    jacobian = _jacobian(reference, responses)
    raw = torch.zeros(len(responses), dtype=torch.float64, requires_grad=True)
    named = list(policy.named_parameters())
    decay = [p for n, p in named if not (n.endswith("bias") or ".ln_" in n)]
    no_decay = [p for n, p in named if n.endswith("bias") or ".ln_" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0},
                                   {"params": [raw], "weight_decay": WEIGHT_DECAY}],
                                  lr=LR, betas=(0.9, 0.999), eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: (STEPS - k) / STEPS)
    micro_batches = [list(range(start, start + BATCH)) for start in range(0, ROWS, BATCH)]
    for _ in range(STEPS):
        step_rows = []
        for rows in micro_batches:          # the whole data set is one optimizer step
            loss, penalty = _objective(policy, reference_logps, jacobian, raw, responses,
                                       rows, variant, scale)
            if variant != "global_batch":
                loss = loss + penalty
            (loss / ACCUMULATION).backward()
            step_rows += rows
        if variant == "global_batch":       # one penalty over both micro-batches
            _, penalty = _objective(policy, reference_logps, jacobian, raw, responses,
                                    step_rows)
            (penalty / ACCUMULATION).backward()
        torch.nn.utils.clip_grad_norm_([*policy.parameters(), raw], CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    return policy, raw.detach(), (reference_logps, jacobian)


# ---- the tests -----------------------------------------------------------------------------

@pytest.mark.parametrize("keying, sigma", [("row", None), ("response", None), ("row", SCALE)])
def test_notebook_preset_matches_independent_implementation(tmp_path, keying, sigma):
    """Row keys are the notebook's one δ′ per pair side; response keys give the same δ′ on
    data where no response repeats (these rows). ``sigma``: the prior on β·δ′ added."""
    initial = H.model()
    trainer = AuxDPOTrainer(copy.deepcopy(initial),
                            args=_config(tmp_path / "run", aux_offsets=keying,
                                         aux_delta_scale=sigma),
                            train_dataset=H.dataset(ROWS), processing_class=H.tokenizer())
    responses = _responses(trainer.train_dataset)
    trainer.train()

    expected, raw, (reference_logps, jacobian) = _reference_run(initial, responses,
                                                                scale=sigma)
    delta = CAP * torch.tanh(raw)
    assert float(delta.abs().min()) > 1e-3              # every δ′ moved, all sides in play
    scale = max(float(p.detach().abs().max()) for p in expected.parameters())
    for (name, ours), theirs in zip(trainer.model.named_parameters(), expected.parameters()):
        assert_close(ours.detach(), theirs.detach(), ops=OPS, scale=scale, msg=name)
    assert_close(trainer.offsets.table().reshape(-1), delta, ops=OPS)   # (0w, 0l, 1w, ...)

    # One micro-batch's objective at the trained point (rows 0 and 1, δ′ ≠ 0).
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (0, 1)])
    trainer.model.train()
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, batch)
        loss, penalty = _objective(expected, reference_logps, jacobian, raw, responses, [0, 1],
                                   scale=sigma)
    assert abs(float(penalty)) > 1e-3 * float(loss)     # the penalty counts in the objective
    assert_close(ours, loss + penalty, ops=OPS)
    if sigma is not None:
        # Over all rows the shares' mean is the full value (τ/2n)Σ(βδ′)², logged as aux/prior;
        # and the prior really moved the run.
        assert all("aux/prior" in e for e in trainer.state.log_history[:STEPS])
        full = float((BETA * delta).pow(2).sum()) / (2 * sigma**2 * ROWS)
        index = torch.arange(ROWS)
        with torch.no_grad():
            shares = trainer.aux.prior(index, *trainer.offsets.deltas(index))
        assert float(shares) == pytest.approx(full, rel=1e-13)
        assert trainer._metrics["train"]["aux/prior"][-1] == pytest.approx(full, rel=1e-13)
        without, raw_without, _ = _reference_run(initial, responses)
        assert float((raw_without - raw).abs().max()) > 1e4 * REL

    # The comparison catches a penalty on the global batch and offsets outside β.
    for variant in ("global_batch", "outside_beta") if keying == "row" and sigma is None else ():
        mutated, mutated_raw, _ = _reference_run(initial, responses, variant)
        gap = max(float((a - b).abs().max())
                  for a, b in zip(mutated.parameters(), expected.parameters()))
        gap = max(gap, float((mutated_raw - raw).abs().max()))
        assert gap > 1e4 * REL * max(scale, 1.0), variant


def _build(tmp_path, **overrides):
    return _config(tmp_path, **overrides)


def test_notebook_preset_switches_constraint_and_exact_jvp(tmp_path):
    config = _build(tmp_path)
    assert config.aux_constraint == "batch"
    assert _build(tmp_path, aux_constraint="batch").aux_constraint == "batch"
    trainer = AuxDPOTrainer(H.model(), args=_config(tmp_path / "a"), train_dataset=H.dataset(4),
                            processing_class=H.tokenizer())
    assert trainer.offsets.products.jvp_method == "forward"       # exact by default
    trainer = AuxDPOTrainer(H.model(), args=_config(tmp_path / "b"), train_dataset=H.dataset(4),
                            processing_class=H.tokenizer(),
                            path_options=PathOptions(jvp="double-vjp"))
    assert trainer.offsets.products.jvp_method == "double-vjp"
    with pytest.raises(ValueError, match="exact A_Bᵀv"):
        AuxDPOTrainer(H.model(), args=_config(tmp_path / "c"), train_dataset=H.dataset(4),
                      processing_class=H.tokenizer(),
                      path_options=PathOptions(jvp="finite-difference"))


@pytest.mark.parametrize("overrides, named", [
    ({"aux_constraint": "projection"}, "aux_constraint"),
    ({"lambda_null": 2.0}, "lambda_null"),
    ({"lambda_amp": 0.1, "aux_constraint": "batch"}, "lambda_amp"),
    ({"delta_lr": 0.5}, "delta_lr"),
    ({"delta_cap": 1.0}, "delta_cap"),
    ({"aux_null_weights": "reference"}, "aux_null_weights"),
    ({"method": "dpo"}, "method"),
    ({"notebook_lambda_null": -1.0}, "notebook_lambda_null"),
    ({"notebook_delta_cap": 0.0}, "notebook_delta_cap"),
    ({"aux_preset": "paper"}, "aux_preset"),
])
def test_notebook_preset_refuses_what_it_cannot_honour(tmp_path, overrides, named):
    with pytest.raises(ValueError, match=named):
        _build(tmp_path, **overrides)


def test_notebook_keys_need_the_preset(tmp_path):
    with pytest.raises(ValueError, match="notebook_lambda_amp is read only with aux_preset"):
        H.config(tmp_path, notebook_lambda_amp=0.1)


def test_notebook_preset_resumes_exactly_and_saves_reward_units(tmp_path):
    """A run resumed from its step-2 checkpoint (δ′ in the optimizer's state and in the
    offsets' files) ends where the uninterrupted run ends; the saved table is β·δ′."""
    from safetensors.torch import load_file

    initial = H.model()
    args = _config(tmp_path / "run", save_strategy="steps", save_steps=2)
    uninterrupted = AuxDPOTrainer(copy.deepcopy(initial), args=args,
                                  train_dataset=H.dataset(ROWS), processing_class=H.tokenizer())
    uninterrupted.train()
    resumed = AuxDPOTrainer(copy.deepcopy(initial), args=_config(tmp_path / "resumed"),
                            train_dataset=H.dataset(ROWS), processing_class=H.tokenizer())
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    # The same operations in the same order after the restore: equal to round-off.
    for ours, theirs in zip(resumed.model.parameters(), uninterrupted.model.parameters()):
        assert_close(ours.detach(), theirs.detach(), ops=100)
    assert_close(resumed.offsets.values(), uninterrupted.offsets.values(), ops=100)
    table = load_file(str(tmp_path / "run" / "checkpoint-3" / "aux_deltas.safetensors"))
    assert_close(table["delta_chosen"], BETA * uninterrupted.offsets.table()[:, 0], ops=10)
    card = (tmp_path / "run" / "checkpoint-3" / "README.md").read_text()
    assert "| `notebook_lambda_null` | `0.2` |" in card and "`delta_lr`" not in card
