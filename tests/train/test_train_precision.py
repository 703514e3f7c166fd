import torch

from auxdpo.train.precision import stalled_share, stalled_weights_message


def _weights(dtype, scale=0.02, n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter((torch.randn(n, generator=g) * scale).to(dtype))


def test_prediction_matches_what_adam_really_does_to_bf16_weights():
    w = _weights(torch.bfloat16)
    before = w.detach().clone()
    share, dtype = stalled_share([w], 5e-7)
    opt = torch.optim.AdamW([w], lr=5e-7, weight_decay=0.0)
    w.grad = torch.randn(w.shape, generator=torch.Generator().manual_seed(1)).to(w.dtype)
    opt.step()
    unchanged = float((w.detach() == before).float().mean())
    assert dtype is torch.bfloat16
    assert share > 0.9                              # σ = 0.02: nearly every weight
    # Adam's first step is lr·sign(g) per weight; the prediction counts |w|·eps/2 > lr
    assert abs(unchanged - share) < 0.02


def test_message_fires_for_16_bit_weights_only_and_names_the_fix():
    assert stalled_weights_message([_weights(torch.float32)], 5e-7) is None
    assert stalled_weights_message([_weights(torch.bfloat16)], 1e-2) is None  # steps move them
    frozen = _weights(torch.bfloat16)
    frozen.requires_grad_(False)
    assert stalled_weights_message([frozen], 5e-7) is None                  # not trained
    message = stalled_weights_message([_weights(torch.bfloat16)], 5e-7)
    assert message is not None and "bfloat16" in message and "float32" in message
    share, _ = stalled_share([_weights(torch.bfloat16)], 5e-7)
    assert message.startswith(f"{share:.0%} of the trainable weights are bfloat16")
    assert "learning_rate=5e-07" in message


def test_trainer_warns_for_a_bf16_model_at_a_small_learning_rate(tmp_path, caplog):
    import logging

    from auxdpo.train import AuxDPOConfig, AuxDPOTrainer
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model

    rows = [{"prompt": "Q: ", "chosen": "yes", "rejected": "no"}] * 2
    import datasets

    def trainer(dtype):
        args = AuxDPOConfig(output_dir=str(tmp_path / str(dtype)), method="dpo", use_cpu=True,
                            bf16=False, learning_rate=5e-7, report_to=[], max_steps=1)
        model = build_tiny_model("gpt2", num_layers=1, hidden_size=16, dtype=dtype)
        return AuxDPOTrainer(model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=build_char_tokenizer())

    with caplog.at_level(logging.WARNING, logger="auxdpo.train.trainer"):
        trainer(torch.float32)
    assert "too large to move" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="auxdpo.train.trainer"):
        trainer(torch.bfloat16)
    assert "are bfloat16 and too large to move by a step of learning_rate=5e-07" in caplog.text
