"""The function the products differentiate (auxdpo.offsets.reference): θ₀'s snapshot, the
flat layout of θ, its log-probs (the model's own), the context's modes, the path chosen."""

import pytest
import torch

from auxdpo.logps import model_sequence_logps
from auxdpo.offsets.reference import ReferenceFunction, check_vector, eval_mode
from offsets_fixtures import preference_batch, tiny_gpt2


def test_flatten_unflatten_round_trip_and_layout():
    model = tiny_gpt2("sdpa")
    names = ["transformer.h.1.ln_1.weight", "transformer.h.1.attn.c_attn.bias"]
    function = ReferenceFunction(model, names)
    sizes = [dict(model.named_parameters())[n].numel() for n in names]
    assert function.dim == sum(sizes)
    vector = torch.arange(function.dim, dtype=torch.float64)
    pieces = function.unflatten(vector)
    assert [p.shape for p in pieces] == [dict(model.named_parameters())[n].shape for n in names]
    assert pieces[1].reshape(-1)[0] == sizes[0]            # param_names order, row-major
    assert torch.equal(function.flatten(pieces), vector)
    with pytest.raises(ValueError, match="expected"):
        function.unflatten(vector[:-1])


def test_logps_are_the_models_at_the_snapshot():
    """log π_θ₀ equal the model's own sequence log-probs (full path and tail path) and stay
    those of θ₀ after the model moves (snapshot); a live function follows the model."""
    model = tiny_gpt2("sdpa", layers=2)
    names = [n for n, _ in model.named_parameters() if n.startswith("transformer.h.1.")]
    batch = preference_batch(2, seed=4)
    with torch.no_grad(), eval_mode(model):
        expected = model_sequence_logps(model, batch)
    full = ReferenceFunction(model, names, truncate=False)
    tail = ReferenceFunction(model, names)
    live = ReferenceFunction(model, names, snapshot=False, truncate=False)
    assert not full.truncated and tail.truncated and tail.tail_plan.first == 1
    torch.testing.assert_close(full.logps(batch), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tail.logps(batch), expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        dict(model.named_parameters())[names[0]].add_(0.5)
    torch.testing.assert_close(full.logps(batch), expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(live.logps(batch), expected)
    with torch.no_grad():
        dict(model.named_parameters())[names[0]].sub_(0.5)


def test_context_turns_dropout_off_and_restores_modes():
    model = tiny_gpt2("sdpa")
    model.train()
    function = ReferenceFunction(model)
    with function.context(math_attention=True):
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())


def test_refusals():
    model = tiny_gpt2("sdpa")
    with pytest.raises(ValueError, match="not found"):
        ReferenceFunction(model, ["nope"])
    with pytest.raises(ValueError, match="duplicates"):
        ReferenceFunction(model, ["transformer.ln_f.weight", "transformer.ln_f.weight"])
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        check_vector("tangent", torch.zeros(2), 3)
