"""Sequence log-probs against a hand loop over tokens; sum vs mean; the model wrapper."""

import math

import pytest
import torch

from auxdpo.logps import model_sequence_logps, sequence_logps
from offsets_fixtures import preference_batch, tiny_gpt2
from tolerance import assert_close


def _hand_loop(logits, input_ids, completion_mask, average):
    out = []
    for r in range(logits.shape[0]):
        total, count = 0.0, 0
        for t in range(1, logits.shape[1]):
            if completion_mask[r, t]:
                row = logits[r, t - 1].tolist()
                norm = math.log(sum(math.exp(x) for x in row))
                total += row[int(input_ids[r, t])] - norm
                count += 1
        out.append(total / max(count, 1) if average else total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_matches_hand_loop(average):
    gen = torch.Generator().manual_seed(1)
    batch = preference_batch(3, seed=4)
    logits = torch.randn(6, 12, 7, generator=gen, dtype=torch.float64)
    ids = batch["input_ids"] % 7
    got = sequence_logps(logits, ids, batch["completion_mask"], average=average)
    want = _hand_loop(logits, ids, batch["completion_mask"], average)
    assert_close(got, want, ops=100)


def test_hand_computed_two_token_case():
    # Vocabulary {0,1}; logits (0, log 3) give p(1) = 3/4, uniform logits give 1/2.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, 5.0]]], dtype=torch.float64)
    ids = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[0, 1, 1]])
    total = sequence_logps(logits, ids, mask)
    mean = sequence_logps(logits, ids, mask, average=True)
    assert total.item() == pytest.approx(math.log(0.75) + math.log(0.5), rel=1e-13)
    assert mean.item() == pytest.approx((math.log(0.75) + math.log(0.5)) / 2, rel=1e-13)


def test_prompt_and_padding_do_not_count():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 6, 5, generator=gen, dtype=torch.float64)
    ids = torch.tensor([[1, 2, 3, 4, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 0, 0]])
    changed = logits.clone()
    changed[0, 0] += 3.0   # scores token 1 (prompt)
    changed[0, 4:] -= 2.0  # score padding positions
    torch.testing.assert_close(sequence_logps(logits, ids, mask),
                               sequence_logps(changed, ids, mask), rtol=0, atol=0)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="completion_mask"):
        sequence_logps(torch.zeros(2, 5, 3), torch.zeros(2, 5, dtype=torch.long),
                       torch.zeros(2, 4))
    with pytest.raises(ValueError, match="input_ids"):
        model_sequence_logps(torch.nn.Identity(), {"completion_mask": torch.zeros(1, 2)})


def test_model_wrapper_and_functional_params():
    model = tiny_gpt2().eval()
    batch = preference_batch(2, seed=3, index=[0, 1])  # aux_index must be ignored
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = _hand_loop(logits.detach(), batch["input_ids"], batch["completion_mask"], False)
    got = model_sequence_logps(model, batch)
    assert_close(got.detach(), want, ops=100)
    # Overriding one tensor through params changes the result; the model is untouched.
    name = "transformer.h.1.mlp.c_fc.weight"
    before = dict(model.named_parameters())[name].clone()
    # a random change: a uniform shift would be invisible after the following LayerNorm
    change = 0.5 * torch.randn(before.shape, generator=torch.Generator().manual_seed(0),
                               dtype=before.dtype)
    shifted = {name: before + change}
    other = model_sequence_logps(model, batch, params=shifted)
    assert not torch.allclose(other, got)
    assert torch.equal(dict(model.named_parameters())[name], before)
    with torch.no_grad():
        dict(model.named_parameters())[name].add_(change)
    assert_close(model_sequence_logps(model, batch), other, ops=100)
