"""A_Bᵀt by difference quotients (auxdpo.offsets.differences): the trainer's default JVP,
against A_B built column by column (float64 and float32), its step-size state, its refusals."""

import pytest
import torch

from auxdpo.offsets.differences import DIFFERENCE_METHODS, DIFFERENCE_SCALES, DifferenceJVP
from auxdpo.offsets.products import ReferenceProducts
from auxdpo.offsets.reference import ReferenceFunction
from offsets_fixtures import brute_force_columns, preference_batch, tiny_gpt2, tiny_llama

BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
LAST_BLOCK = {"gpt2": "transformer.h.1.", "llama": "model.layers.1."}

# ---- difference JVPs (the trainer's default) ------------------------------------------------

# Relative error bound ‖Δ − A_Bᵀt‖/‖A_Bᵀt‖ of each difference method, by dtype: a few times
# the typical errors (one-sided 1e-7 / 1e-3, central 1e-9 / 4e-4; float32 reaches 6e-3 on
# one LoRA case).
_DIFFERENCE_BOUNDS = {("finite-difference", torch.float64): 2e-6,
                      ("central-difference", torch.float64): 5e-8,
                      ("finite-difference", torch.float32): 1e-2,
                      ("central-difference", torch.float32): 1e-2}


def _relative(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("subset", ["all", "last_block", "lora"])
@pytest.mark.parametrize("method", ["finite-difference", "central-difference"])
def test_difference_jvp_matches_explicit_columns(arch, subset, method):
    """A_Bᵀt by a difference quotient is within its bound of the explicit columns, in float64
    and float32, on the first call (pilot step) and on later calls (the kept step state), by
    ``jvp``, ``linearize`` and ``Linearization.jvp``; its primal is ``logps`` exactly."""
    model = BUILDERS[arch]("sdpa")
    if subset == "lora":
        peft = pytest.importorskip("peft")
        targets = ["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"]
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets, lora_dropout=0.0)
        model = peft.get_peft_model(model, config)        # B = 0 at θ₀, as in training
    elif subset == "last_block":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(LAST_BLOCK[arch]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    batch = preference_batch(3, seed=17)
    columns = brute_force_columns(model, batch, names)                # (d, N), float64
    tangent = columns @ torch.randn(columns.shape[1], generator=torch.Generator().manual_seed(4),
                                    dtype=torch.float64)            # u = A_B·c, as in training
    exact = columns.T @ tangent
    for dtype in (torch.float64, torch.float32):
        model.to(dtype)
        products = ReferenceProducts(model, jvp_method=method)
        bound = _DIFFERENCE_BOUNDS[method, dtype]
        t = tangent.to(dtype)
        first = products.jvp(batch, t)
        assert products.difference_gain is not None
        lin = products.linearize(batch, t)
        assert torch.equal(lin.logps, products.logps(batch))
        for value in (first, products.jvp(batch, t), lin.directional, lin.jvp(t),
                      products.linearize(batch, t, keep_graph=True).directional):
            assert _relative(value, exact) < bound, (dtype, _relative(value, exact))
        assert torch.equal(products.jvp(batch, torch.zeros_like(t)),
                           torch.zeros(exact.shape[0], dtype=dtype))
    model.to(torch.float64)


def test_difference_jvp_refuses_16_bit():
    model = tiny_gpt2("sdpa").to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32 or float64"):
        ReferenceProducts(model, jvp_method="finite-difference")
    ReferenceProducts(model, jvp_method="forward")     # exact forward mode is allowed


def test_step_follows_the_previous_gain_and_the_state_round_trips():
    """The gain ‖A_Bᵀt‖/‖t‖ of a call sets the next call's step: a strategy given another's
    gain takes the same step (bit for bit the same quotient); an unknown method is refused."""
    model = tiny_gpt2("sdpa")
    batch = preference_batch(2, seed=3)
    function = ReferenceFunction(model)
    fn = function.prepare(batch)
    tangent = torch.randn(function.dim, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    first = DifferenceJVP(function, "central-difference")
    assert first.gain is None
    logps, directional = first.logps_and_jvp(fn, tangent)
    assert first.gain == pytest.approx(float(directional.norm() / tangent.norm()), rel=1e-12)
    second = DifferenceJVP(function, "central-difference")
    second.gain = first.gain
    assert torch.equal(second.jvp_at(fn, tangent, logps), first.jvp_at(fn, tangent, logps))
    assert torch.equal(first.jvp_at(fn, 0 * tangent, logps), torch.zeros_like(logps))
    with pytest.raises(ValueError, match="difference method"):
        DifferenceJVP(function, "forward")
    assert set(DIFFERENCE_METHODS) == set(DIFFERENCE_SCALES)
