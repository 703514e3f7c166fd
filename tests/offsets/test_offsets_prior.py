"""The Gaussian prior on the offsets (auxdpo.offsets.prior) against the full-batch objective:
one epoch of per-step δ-gradients, all taken at the same (θ, δ) with δ ≠ 0, adds up to (n/G)
times autograd's gradient of

    (1/n) Σ_i ℓ_i + (τ/2n) Σ_k δ_k² [+ the mode's penalty]

on the whole dataset (float64, tiny GPT-2, response keys with responses in 2, 3 or 4 pairs).
θ is fixed by fixing each row's margin h_i; the δ-optimizer is SGD, so a step reveals its
gradient as (before − after)/lr, and the state is reloaded before every step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from auxdpo.offsets import AuxOffsets
from auxdpo.offsets.keys import keys_from_ids, slot_weights
from auxdpo.offsets.prior import OffsetPrior, prior_precision
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import (
    brute_force_dataset_matrix,
    comparison_rows,
    id_batch,
    id_batches,
    tiny_gpt2,
)
from tolerance import assert_close

F64 = torch.float64
SIGMA, LR, G = 0.7, 0.1, 6            # prior σ (τ ≈ 2), δ's SGD rate, rows per step


def _world(num_prompts, responses, names=None):
    """Rows, keys, the slot columns ω-free (d × K, ∇log π_θ₀ of each slot) and row margins."""
    ids = comparison_rows(num_prompts=num_prompts, responses=responses)
    model = tiny_gpt2("sdpa", layers=1).eval()
    names = names or [n for n, _ in model.named_parameters()]
    data = id_batches(ids, 5)
    keys = keys_from_ids(*ids)
    n = len(ids[0])
    row_matrix = brute_force_dataset_matrix(model, data, names, n)      # (d, 2n)
    columns = torch.zeros(row_matrix.shape[0], keys.num_slots, dtype=F64)
    columns[:, keys.slots.reshape(-1)] = row_matrix
    logps = torch.zeros(keys.num_slots, dtype=F64)
    for batch in data:
        values = ReferenceProducts(model, names).logps(batch)
        rows = batch["aux_index"]
        logps[keys.slots[rows, 0]] = values[:len(rows)]
        logps[keys.slots[rows, 1]] = values[len(rows):]
    return {"ids": ids, "model": model, "names": names, "data": data, "keys": keys, "n": n,
            "columns": columns, "logps": logps,
            "margins": torch.linspace(-1.5, 2.0, n, dtype=F64)}


@pytest.fixture(scope="module")
def small():
    """3 prompts × 3 responses in 4 pairs: n = 12, K = 9, responses in 2 or 3 pairs."""
    return _world(3, 3)


@pytest.fixture(scope="module")
def wide():
    """6 prompts × 4 responses in 7 pairs, d = 16: n = 42, K = 24 > d, responses in 3 or 4
    pairs; N(A) has dimension 8."""
    return _world(6, 4, names=["transformer.ln_f.bias"])


def _make(world, **kwargs):
    offsets = AuxOffsets(world["n"], ReferenceProducts(world["model"], world["names"]),
                         keys=world["keys"], dtype=F64, delta_lr=LR, optimizer="sgd", **kwargs)
    offsets.prepare(world["data"])
    return offsets


def _full_objective(world, delta, weights, mode, lam, lam_amp, steps, tau):
    """Σ over the epoch's steps of each step's objective, scaled so that its gradient is the
    epoch's summed step gradient: (n/G)·[(1/n)Σℓ + (τ/2n)Σδ² (+ λ‖Aδ/(2n)‖², global)]
    (+ Σ_B P_B, batch)."""
    n, keys = world["n"], world["keys"]
    slots = keys.slots
    losses = -F.logsigmoid(world["margins"] + delta[slots[:, 0]] - delta[slots[:, 1]])
    full = losses.sum() / n + (tau * delta.pow(2)).sum() / (2 * n)
    if mode == "global":
        full = full + lam * (world["columns"] @ (weights * delta) / (2 * n)).pow(2).sum()
    total = (n / G) * full
    if mode == "batch":
        factors = weights / keys.counts().to(F64)
        for rows in steps:
            occurrences = slots[rows].T.reshape(-1)
            image = world["columns"][:, occurrences] @ (factors[occurrences]
                                                       * delta[occurrences])
            total = total + (lam * image.pow(2).sum() / (2 * G) ** 2
                             + lam_amp * delta[occurrences].pow(2).sum() / (2 * G))
    return total


def _step_gradient(offsets, world, rows):
    """One SGD step on ``rows`` (two micro-batches, mean loss over G): (before − after)/lr of
    δ's trained parameter (raw, or c in projection mode), and the step's metrics."""
    name = "coef" if offsets.mode == "projection" else "raw"
    before = getattr(offsets, name).detach().clone()
    for part in (rows[: len(rows) // 2], rows[len(rows) // 2:]):
        batch = id_batch(world["ids"], part)
        chosen, rejected = offsets.deltas(batch["aux_index"])
        margins = world["margins"][batch["aux_index"]]
        (-F.logsigmoid(margins + chosen - rejected).sum() / len(rows)).backward()
        offsets.accumulate(batch)
    metrics = offsets.step(len(rows))
    return (before - getattr(offsets, name).detach()) / LR, metrics


@pytest.mark.parametrize("mode, cap, weighting, half", [
    ("global", None, "prompt", None), ("global", 0.8, "multiplicity", None),
    ("batch", None, "prompt", None), ("projection", None, "prompt", None),
    ("global", None, "prompt", 3.0), ("projection", None, "prompt", 3.0)])
def test_an_epoch_of_steps_estimates_the_full_gradient(small, wide, mode, cap, weighting,
                                                        half):
    """``half`` c½: the count-dependent prior, τ_k = τ·(1 + c½/c_k) in place of τ."""
    world = wide if mode == "projection" else small
    n, tau = world["n"], 1 / SIGMA**2
    if half is not None:
        tau = tau * (1 + half / world["keys"].counts().to(F64))     # τ_k, (K,)
    lam, lam_amp = {"global": (3.0, 0.0), "batch": (3.0, 0.2), "projection": (0.0, 0.0)}[mode]
    offsets = _make(world, mode=mode, lambda_null=lam, lambda_amp=lam_amp, delta_cap=cap,
                    null_weights=weighting, delta_scale=SIGMA, delta_half_count=half)
    weights = slot_weights(world["keys"], weighting, world["logps"])
    assert_close(offsets.weights, weights, ops=1e3)
    gen = torch.Generator().manual_seed(4)
    state = offsets.state_dict()
    if mode == "projection":
        assert offsets.basis.shape == (24, 8)
        parameter = torch.randn(1, 8, generator=gen, dtype=F64)      # δ = Γc ≠ 0 in N(A)
        state["coef"] = parameter
    else:
        parameter = torch.randn(world["keys"].num_slots, generator=gen, dtype=F64)
        state["raw"] = parameter
    offsets.load_state_dict(state, recompute=True)                  # u = A·δ for this δ
    state = copy.deepcopy(offsets.state_dict())
    delta0 = offsets.values()
    assert float(delta0.norm()) > 1.0

    order = torch.randperm(n, generator=gen).tolist()
    steps = [order[start:start + G] for start in range(0, n, G)]
    assert all(len(rows) == G for rows in steps)           # n = 12 or 42: G | n
    total = torch.zeros_like(parameter)
    for rows in steps:
        offsets.load_state_dict(state)                     # every step at the same δ (and u)
        gradient, metrics = _step_gradient(offsets, world, rows)
        total += gradient
        assert metrics["aux/prior"] == pytest.approx(
            float((tau * delta0.pow(2)).sum()) / (2 * n), rel=1e-13)

    def full_gradient(tau):
        variable = parameter.clone().requires_grad_(True)
        if mode == "projection":
            delta = offsets.basis @ variable[0]
        else:
            delta = variable if cap is None else cap * torch.tanh(variable)
        objective = _full_objective(world, delta, weights, mode, lam, lam_amp, steps, tau)
        return torch.autograd.grad(objective, variable)[0]

    expected = full_gradient(tau)
    # The SGD difference rounds at |parameter|/lr; the gradients' own sums at their scale.
    scale = float(parameter.abs().max()) / LR + float(expected.abs().max())
    assert_close(total, expected, ops=1e4, scale=scale)
    # The prior's part is really there: without it the epoch's sum is another vector.
    without = full_gradient(0.0)
    tolerance = 1e4 * torch.finfo(F64).eps * scale
    assert float((expected - without).abs().max()) > 1e6 * tolerance


@pytest.mark.filterwarnings("ignore:projection. K = 9 offsets")     # N(A) = {0} here: fine
def test_no_prior_runs_no_prior_code(small, monkeypatch):
    """delta_scale=None: the step never enters the prior's code, so the objective and every
    number computed are those of the code before the prior existed; with σ set, it does."""
    def refuse(*args, **kwargs):
        raise AssertionError("prior code ran without a prior")

    monkeypatch.setattr(OffsetPrior, "add_grad", refuse)
    for mode in ("global", "batch", "projection"):
        offsets = _make(small, mode=mode, lambda_null=1.0 if mode != "projection" else 0.0)
        assert offsets.prior_precision == 0.0
        _, metrics = _step_gradient(offsets, small, list(range(4)))
        assert "aux/prior" not in metrics
    offsets = _make(small, mode="global", delta_scale=SIGMA)
    with pytest.raises(AssertionError, match="prior code ran"):
        _step_gradient(offsets, small, list(range(4)))


def test_row_shares_add_up_to_the_prior(small):
    """Σ_i of the rows' shares (τ/2)(δ_w²/c_w + δ_l²/c_l) is (τ/2)Σ_k δ_k²: every slot counted
    c_k times with 1/c_k; a row keeps the gradient of its share."""
    offsets = _make(small, mode="batch", delta_scale=SIGMA)
    values = torch.linspace(-1, 2, small["keys"].num_slots, dtype=F64)
    index = torch.arange(small["n"])
    rows = values[small["keys"].slots]
    shares = offsets.prior_shares(index, rows[:, 0], rows[:, 1])
    tau = 1 / SIGMA**2
    assert float(shares.sum()) == pytest.approx(tau / 2 * float(values.pow(2).sum()), rel=1e-13)
    counts = small["keys"].counts().to(F64)
    assert float(shares[0]) == pytest.approx(
        tau / 2 * (float(rows[0, 0]) ** 2 / float(counts[small["keys"].slots[0, 0]])
                   + float(rows[0, 1]) ** 2 / float(counts[small["keys"].slots[0, 1]])),
        rel=1e-13)


@pytest.mark.parametrize("scale, precision", [(None, 0.0), (2.0, 0.25), (1, 1.0), (0.5, 4.0)])
def test_precision_of_the_scale(scale, precision):
    assert prior_precision(scale) == precision


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan"), True, "1"])
def test_bad_scales_are_refused(scale, small):
    with pytest.raises(ValueError, match="delta_scale"):
        prior_precision(scale)
    with pytest.raises(ValueError, match="delta_scale"):
        AuxOffsets(small["n"], ReferenceProducts(small["model"]), keys=small["keys"],
                   delta_scale=scale)


def test_prior_object_values_and_resume_warning():
    """OffsetPrior: τ_k = τ(1 + c½/c_k), total (1/2n)Στ_kδ_k² by hand, its state round trip,
    and a warning when a checkpoint's σ differs."""
    counts = torch.tensor([1.0, 3.0, 2.0, 2.0], dtype=F64)
    prior = OffsetPrior(0.5, 1.0, counts, torch.tensor([[0, 1], [2, 3]]))
    assert prior.active and prior.precision == 4.0
    torch.testing.assert_close(prior.slot_tau, 4.0 * (1 + 1 / counts), rtol=1e-15, atol=0)
    values = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=F64)
    assert prior.total(values) == pytest.approx((8 * 1 + 16 / 3 * 1 + 6 * 0.25) / 4, rel=1e-12)
    prior.load_state_dict(prior.state_dict())                # same σ, c½: silent
    with pytest.warns(RuntimeWarning, match="σ = 0.7"):
        prior.load_state_dict({"delta_scale": 0.7, "delta_half_count": 1.0})
    assert not OffsetPrior(None, None, counts, torch.zeros(2, 2, dtype=torch.long)).active
