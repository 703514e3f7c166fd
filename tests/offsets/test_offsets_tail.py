"""The trainable tail (auxdpo.offsets.tail): where it starts, why it is refused, its captured
inputs, and its log-probs against the whole model's."""

import torch

from auxdpo.logps import model_sequence_logps
from auxdpo.offsets.tail import find_tail, same_inputs, same_values
from offsets_fixtures import preference_batch, tiny_gpt2


def _names(model, prefix):
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


def test_tail_starts_at_the_first_trainable_block():
    model = tiny_gpt2("sdpa", layers=3)
    plan, reason = find_tail(model, _names(model, "transformer.h.1.") + ["transformer.h.2.ln_2.bias"])
    assert plan.first == 1 and plan.num_blocks == 3 and reason == "tail from block 1 of 3"
    plan, reason = find_tail(model, ["transformer.ln_f.weight"])
    assert plan.first == 3 and reason == "tail from the final norm"


def test_tail_refused_outside_the_blocks_and_for_tied_tensors():
    model = tiny_gpt2("sdpa", layers=2)
    plan, reason = find_tail(model, ["transformer.wpe.weight"])
    assert plan is None and "outside" in reason
    plan, reason = find_tail(model, ["transformer.wte.weight"])     # tied to the LM head
    assert plan is None


def test_tail_logps_and_captures_match_the_whole_model():
    """capture() (the prefix alone) and recording() (during the model's own forward) give
    the same inputs; the tail's log-probs from them equal the model's."""
    model = tiny_gpt2("sdpa", layers=3).eval()
    names = _names(model, "transformer.h.2.")
    plan, _ = find_tail(model, names)
    batch = preference_batch(2, seed=6)
    captured = plan.capture(batch)
    with plan.recording() as store, torch.no_grad():
        expected = model_sequence_logps(model, batch)
    assert len(store) == 1 and same_inputs(store[0], captured)
    params = {n: p.detach() for n, p in model.named_parameters()}
    logps = plan.logps(captured, batch, params, average=False)
    torch.testing.assert_close(logps, expected, rtol=1e-10, atol=1e-10)


def test_same_values_tolerance_follows_the_dtype():
    x = torch.tensor([1.0, 100.0], dtype=torch.float64)
    assert same_values(x + 1e-9, x)                  # 1e-10 relative to max(|y|, 1) = 100
    assert not same_values(x + 1e-7, x)
    y = x.float()
    assert same_values(y + 1e-4, y) and not same_values(y + 1e-2, y)
    assert not same_values(x, x[:1]) and not same_values(x * float("nan"), x)
