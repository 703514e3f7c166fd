"""Response-keyed, weighted offsets against brute force (float64, tiny GPT-2): the penalty's
δ-gradient against autograd of λ‖Σ_k ω_k δ_k g_k/(2n)‖² with an explicit Jacobian, u = A·δ,
the batch and projection modes, keys, weights and checkpoints."""

import copy

import pytest
import torch
import torch.nn.functional as F

from auxdpo.logps import model_sequence_logps
from auxdpo.offsets import AuxOffsets
from auxdpo.offsets import keys as offset_keys
from auxdpo.offsets.keys import coverage, inactive_warning, keys_from_ids, row_keys, slot_weights
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import (
    brute_force_dataset_matrix,
    comparison_rows,
    id_batch,
    id_batches,
    tiny_gpt2,
)

F64 = torch.float64


def _slot_columns(keys, row_matrix, row_values):
    """(d, K) columns and (K,) values of the slots, from per-(row, side) ones in the row
    layout (column 2i chosen, 2i+1 rejected); every occurrence of a slot must agree."""
    flat_slots = keys.slots.reshape(-1)
    columns = torch.zeros(row_matrix.shape[0], keys.num_slots, dtype=F64)
    values = torch.zeros(keys.num_slots, dtype=F64)
    columns[:, flat_slots] = row_matrix
    values[flat_slots] = row_values
    torch.testing.assert_close(columns[:, flat_slots], row_matrix, rtol=0, atol=1e-12)
    torch.testing.assert_close(values[flat_slots], row_values, rtol=0, atol=1e-12)
    return columns, values


def _world(ids, names=None):
    model = tiny_gpt2("sdpa", layers=1).eval()          # no dropout in the log-probs
    names = names or [n for n, _ in model.named_parameters()]
    data = id_batches(ids, 4)
    keys = keys_from_ids(*ids)
    n = len(ids[0])
    row_matrix = brute_force_dataset_matrix(model, data, names, n)
    row_logps = torch.zeros(2 * n, dtype=F64)
    for batch in data:
        logps = model_sequence_logps(model, batch).detach()
        index, size = batch["aux_index"], batch["aux_index"].shape[0]
        row_logps[2 * index], row_logps[2 * index + 1] = logps[:size], logps[size:]
    columns, logps = _slot_columns(keys, row_matrix, row_logps)
    return {"model": model, "names": names, "data": data, "keys": keys, "ids": ids, "n": n,
            "columns": columns, "logps": logps,
            "margins": torch.linspace(-2, 2, n, dtype=F64)}


@pytest.fixture(scope="module")
def world():
    return _world(comparison_rows())          # 3 prompts × 3 responses, 4 pairs each


def make(world, **kwargs):
    kwargs.setdefault("dtype", F64)
    products = ReferenceProducts(world["model"], world["names"])
    offsets = AuxOffsets(world["n"], products, keys=world["keys"], **kwargs)
    offsets.prepare(world["data"])
    return offsets


def dpo_backward(offsets, world, rows, global_batch_size):
    batch = id_batch(world["ids"], rows)
    chosen, rejected = offsets.deltas(batch["aux_index"])
    m = world["margins"][batch["aux_index"]]
    (-F.logsigmoid(m + chosen - rejected).sum() / global_batch_size).backward()
    offsets.accumulate(batch)


def dpo_slot_grad(world, values, rows, global_batch_size):
    """∂(mean DPO loss over the step's rows)/∂δ over slots, by autograd."""
    values = values.clone().requires_grad_(True)
    index = torch.tensor(rows)
    slots = world["keys"].slots[index]
    loss = -F.logsigmoid(world["margins"][index] + values[slots[:, 0]]
                         - values[slots[:, 1]]).sum()
    (loss / global_batch_size).backward()
    return values.grad


def weights_of(world, weighting):
    return slot_weights(world["keys"], weighting, world["logps"])


def test_keys_share_slots_and_count_occurrences(world):
    keys = world["keys"]
    assert keys.keying == "response" and keys.num_slots == 9 and world["n"] == 12
    # pairs (0,1), (0,2), (1,2), (2,0) of each prompt's responses, slots by first occurrence
    assert keys.slots[:4].tolist() == [[0, 1], [0, 2], [1, 2], [2, 0]]
    assert torch.equal(keys.slots[4:8], keys.slots[:4] + 3)
    assert keys.counts().tolist() == [3, 2, 3] * 3
    assert keys.prompts.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    stats = coverage(keys)
    assert stats == {"aux/unique_responses": 9.0, "aux/pairs_per_response": 24 / 9,
                     "aux/shared_share": 1.0}


def test_weights_follow_their_formulas(world):
    keys, logps = world["keys"], world["logps"]
    counts = keys.counts().to(F64)
    torch.testing.assert_close(weights_of(world, "multiplicity"), counts, rtol=0, atol=0)
    at_prompt = torch.full((9,), 8.0, dtype=F64)          # N_s: 4 pairs · 2 sides per prompt
    torch.testing.assert_close(weights_of(world, "reference"), at_prompt * logps.exp(),
                               rtol=1e-14, atol=0)
    prompt = weights_of(world, "prompt")
    for s in range(3):
        block = slice(3 * s, 3 * s + 3)
        torch.testing.assert_close(prompt[block], 8 * torch.softmax(logps[block], 0),
                                   rtol=1e-13, atol=0)
    assert float(prompt.sum()) == pytest.approx(2 * world["n"], rel=1e-14)
    assert not torch.allclose(prompt, counts, rtol=0.05)   # a real reweighting


@pytest.mark.parametrize("weighting", ["multiplicity", "prompt"])
def test_global_penalty_gradient_and_u_match_brute_force(world, weighting):
    lam, lr, n, size = 2.0, 0.05, world["n"], 6
    omega = weights_of(world, weighting)
    columns = world["columns"]
    offsets = make(world, mode="global", lambda_null=lam, delta_lr=lr, optimizer="sgd",
                   null_weights=weighting)
    torch.testing.assert_close(offsets.weights, omega, rtol=1e-13, atol=0)
    counts = world["keys"].counts().to(F64)

    def penalty(values):                         # λ‖Σ_k ω_k δ_k g_k/(2n)‖², explicit A
        return lam * ((columns @ (omega * values)) / (2 * n)).pow(2).sum()

    gen = torch.Generator().manual_seed(0)
    schedule = [torch.randint(0, n, (size,), generator=gen).tolist() for _ in range(8)]
    schedule.append(list(range(n)))            # a whole pass: penalty part = ∇P exactly
    for rows in schedule:
        before = offsets.values()
        torch.testing.assert_close(offsets.u, columns @ (omega * before), rtol=0, atol=1e-9)
        values = before.clone().requires_grad_(True)
        exact = torch.autograd.grad(penalty(values), values)[0]
        in_step = torch.bincount(world["keys"].slots[rows].reshape(-1), minlength=9).to(F64)
        # each occurrence adds (n/G)·f_k·2λ/(2n)²·g_kᵀu = (n/G)·∂P/∂δ_k / c_k
        expected = (dpo_slot_grad(world, before, rows, len(rows))
                    + (n / len(rows)) * in_step / counts * exact)
        for part in (rows[: len(rows) // 2], rows[len(rows) // 2:]):
            dpo_backward(offsets, world, part, len(rows))
        metrics = offsets.step(len(rows))
        assert metrics["aux/penalty"] == pytest.approx(float(penalty(before)), rel=1e-10,
                                                       abs=1e-15)
        after = offsets.values()
        touched = in_step > 0
        scale = float(expected.abs().max())
        torch.testing.assert_close((before - after)[touched] / lr, expected[touched],
                                   rtol=0, atol=1e-9 * scale)
        assert torch.equal(after[~touched], before[~touched])
    assert offsets.values().abs().max() > 1e-2
    u_true = columns @ (omega * offsets.values())
    torch.testing.assert_close(offsets.u, u_true, rtol=0, atol=1e-9)
    offsets.recompute_u(world["data"])           # the occurrences' f_k δ_k g_k add up to ω
    torch.testing.assert_close(offsets.u, u_true, rtol=0, atol=1e-10)


def test_batch_mode_matches_brute_force(world):
    lam_null, lam_amp, lr = 3.0, 0.2, 0.05
    omega = weights_of(world, "prompt")
    factors = omega / world["keys"].counts().to(F64)
    columns = world["columns"]
    offsets = make(world, mode="batch", lambda_null=lam_null, lambda_amp=lam_amp,
                   delta_lr=lr, optimizer="sgd", null_weights="prompt")
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        rows = torch.randint(0, world["n"], (6,), generator=gen).tolist()
        before = offsets.values()
        occurrences = world["keys"].slots[rows].T.reshape(-1)     # chosen, then rejected
        responses = 2 * len(rows)

        def penalty(values):
            image = columns[:, occurrences] @ (factors[occurrences] * values[occurrences])
            return (lam_null * image.pow(2).sum() / responses**2
                    + lam_amp * values[occurrences].pow(2).sum() / responses)

        values = before.clone().requires_grad_(True)
        expected = (dpo_slot_grad(world, before, rows, len(rows))
                    + torch.autograd.grad(penalty(values), values)[0])
        for part in (rows[:3], rows[3:]):
            dpo_backward(offsets, world, part, len(rows))
        metrics = offsets.step(len(rows))
        assert metrics["aux/penalty"] == pytest.approx(float(penalty(before)), rel=1e-10,
                                                       abs=1e-15)
        touched = torch.zeros(9, dtype=torch.bool)
        touched[occurrences] = True
        torch.testing.assert_close((before - offsets.values())[touched] / lr,
                                   expected[touched], rtol=0,
                                   atol=1e-9 * float(expected.abs().max()))
    assert offsets.values().abs().max() > 1e-2


def test_projection_keeps_weighted_constraint_exactly():
    names = ["transformer.ln_f.bias"]                                    # d = 16
    ids = comparison_rows(num_prompts=6, responses=4)                    # K = 24, n = 42
    small = _world(ids, names)
    omega = weights_of(small, "prompt")
    offsets = make(small, mode="projection", delta_lr=0.1, null_weights="prompt")
    assert offsets.basis.shape == (24, 24 - 16)
    torch.testing.assert_close(offsets.jacobian_t, (small["columns"] * omega).T,
                               rtol=0, atol=1e-12)
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        rows = torch.randint(0, small["n"], (8,), generator=gen).tolist()
        dpo_backward(offsets, small, rows, 8)
        metrics = offsets.step(8)
    values = offsets.values()
    assert values.norm() > 0.05
    assert float((small["columns"] @ (omega * values)).norm() / values.norm()) < 1e-12
    assert metrics["aux/null_residual"] < 1e-12
    torch.testing.assert_close(offsets.table(), values[small["keys"].slots], rtol=0, atol=0)


def _steps(offsets, world, seed, steps=3):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, world["n"], (4,), generator=gen).tolist()
        dpo_backward(offsets, world, rows, 4)
        offsets.step(4)


@pytest.mark.parametrize("mode", ["global", "batch"])
def test_state_round_trip_and_mismatches(world, mode):
    kwargs = dict(mode=mode, lambda_null=2.0, delta_lr=0.1, delta_cap=2.0,
                  null_weights="prompt")
    uninterrupted = make(world, **kwargs)
    _steps(uninterrupted, world, seed=3)
    state = copy.deepcopy(uninterrupted.state_dict())
    assert state["keying"] == "response" and state["raw"].shape == (9,)
    assert torch.equal(state["slots"], world["keys"].slots)
    _steps(uninterrupted, world, seed=4)
    resumed = make(world, **kwargs)
    resumed.load_state_dict(state)
    _steps(resumed, world, seed=4)
    # global: prepare() knew the data, so loading recomputed u from scratch (round-off)
    torch.testing.assert_close(resumed.values(), uninterrupted.values(), rtol=0, atol=1e-12)
    if mode == "batch":
        assert torch.equal(resumed.values(), uninterrupted.values())
    else:
        torch.testing.assert_close(resumed.u, uninterrupted.u, rtol=0, atol=1e-12)
    other_weights = make(world, **dict(kwargs, null_weights="multiplicity"))
    with pytest.raises(ValueError, match="null_weights"):
        other_weights.load_state_dict(state)
    row_keyed = AuxOffsets(world["n"], ReferenceProducts(world["model"]), dtype=F64,
                           mode=mode, lambda_null=2.0)
    with pytest.raises(ValueError, match="keying"):
        row_keyed.load_state_dict(state)
    shuffled = dict(state, slots=state["slots"].flip(0))
    with pytest.raises(ValueError, match="slot map"):
        make(world, **kwargs).load_state_dict(shuffled)


def test_state_saved_before_keying_is_refused():
    """A state of the old (n, 2) row layout (no keying recorded) is not read: 0.1 has no
    states from before slot keying to resume."""
    world = _world(comparison_rows(num_prompts=1))
    row = AuxOffsets(world["n"], ReferenceProducts(world["model"]), mode="global",
                     dtype=F64, delta_lr=0.1)
    row.prepare(world["data"])
    _steps(row, world, seed=5)
    state = copy.deepcopy(row.state_dict())
    n = world["n"]
    legacy = {k: v for k, v in state.items()
              if k not in ("keying", "null_weights", "slots", "weights")}
    legacy["raw"] = state["raw"].view(n, 2)
    resumed = AuxOffsets(n, ReferenceProducts(world["model"]), mode="global", dtype=F64,
                         delta_lr=0.1)
    with pytest.raises(ValueError, match="keying=None"):
        resumed.load_state_dict(legacy)
    assert torch.equal(resumed.values(), torch.zeros(2 * n, dtype=F64))


def test_unique_responses_give_the_row_layout(world):
    ids = [list(column) for column in comparison_rows(num_prompts=4, responses=2,
                                                      pairs=[(0, 1)])]
    keys = keys_from_ids(*ids)
    assert torch.equal(keys.slots, row_keys(4).slots)
    assert keys_from_ids(*ids, keying="row").prompts.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    stats = coverage(keys)
    assert stats["aux/shared_share"] == 0 and stats["aux/pairs_per_response"] == 1
    assert "more than one epoch" in inactive_warning(stats, "response", epochs=1.0)
    assert inactive_warning(stats, "response", epochs=2.0) is None
    shared = coverage(world["keys"])
    assert inactive_warning(shared, "response", epochs=1.0) is None
    advice = inactive_warning(coverage(row_keys(12)), "row", 1.0, response_stats=shared)
    assert "aux_offsets: response (100%" in advice


def test_hash_collisions_are_resolved_by_the_ids_not_merged(monkeypatch):
    ids = comparison_rows(num_prompts=2)
    expected = keys_from_ids(*ids)
    monkeypatch.setattr(offset_keys, "_fingerprint", lambda group, values: 0)  # all collide
    collided = keys_from_ids(*ids)
    assert torch.equal(collided.slots, expected.slots)
    assert torch.equal(collided.prompts, expected.prompts)
    assert collided.num_slots == 6


def test_bad_keys_and_weights(world):
    products = ReferenceProducts(world["model"])
    with pytest.raises(ValueError, match="null_weights"):
        AuxOffsets(world["n"], products, null_weights="uniform")
    with pytest.raises(ValueError, match="prompt"):
        AuxOffsets(world["n"], products, null_weights="prompt")      # row keys: no prompts
    with pytest.raises(ValueError, match="rows"):
        AuxOffsets(5, products, keys=world["keys"])
    with pytest.raises(ValueError, match="aux_offsets"):
        keys_from_ids(*world["ids"], keying="pair")
    offsets = AuxOffsets(world["n"], products, keys=world["keys"], null_weights="prompt",
                         dtype=F64)
    with pytest.raises(ValueError, match="missing"):
        offsets.prepare(world["data"][1:])


def test_reference_weights_from_the_prepare_pass_and_their_underflow(world, monkeypatch):
    offsets = make(world, mode="global", null_weights="reference")
    torch.testing.assert_close(offsets.weights, weights_of(world, "reference"),
                               rtol=1e-12, atol=0)
    products = ReferenceProducts(world["model"], world["names"])
    monkeypatch.setattr(products, "logps", lambda batch: torch.full(
        (batch["input_ids"].shape[0],), -1000.0, dtype=F64))       # long responses: π_ref ≈ 0
    offsets = AuxOffsets(world["n"], products, keys=world["keys"], null_weights="reference",
                         dtype=F64)
    with pytest.warns(RuntimeWarning, match="underflows to 0 for 9 of 9"):
        offsets.prepare(world["data"])


def test_slot_weights_by_hand_count_every_prompt_once():
    """Prompt 0 has three pairs (responses a, b, c), prompt 1 one pair (d, e): 2n = 8, P = 2.
    multiplicity follows the occurrences; reference and prompt give each prompt the same
    total share 2n/P, whatever its number of pairs (ρ̂ uniform over the data's prompts)."""
    a, b, c, d, e = [1], [2], [3], [4], [5]
    keys = keys_from_ids([[7], [7], [7], [8]], [a, a, b, d], [b, c, c, e])
    logps = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.1, 0.4], dtype=torch.float64))
    assert slot_weights(keys, "multiplicity").tolist() == [2, 2, 2, 1, 1]
    torch.testing.assert_close(slot_weights(keys, "reference", logps),
                               4 * logps.exp(), rtol=1e-13, atol=0)
    want = torch.tensor([4 * 0.5, 4 * 0.3, 4 * 0.2, 4 * 0.2, 4 * 0.8], dtype=torch.float64)
    torch.testing.assert_close(slot_weights(keys, "prompt", logps), want, rtol=1e-13, atol=0)


def test_slot_weights_factors_and_checkpoint():
    """f = ω/c per occurrence: None when ω = c (multiplicity), else applied per slot; a state's
    ω is taken when it agrees to 1e-6 and refused otherwise."""
    from auxdpo.offsets.keys import SlotWeights

    counts = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    weights = SlotWeights(counts)
    weights.set(counts)
    assert weights.factors is None and not weights.unit
    values, slots = torch.tensor([1.0, 1.0, 1.0], dtype=F64), torch.tensor([2, 0, 2])
    assert weights.per_occurrence(values, slots) is values
    weights.set(torch.tensor([2.0, 1.0, 1.0], dtype=F64))
    assert weights.per_occurrence(values, slots).tolist() == [0.25, 2.0, 0.25]
    weights.load_state_dict({"weights": torch.tensor([2.0, 1.0, 1.0 + 1e-9])}, "prompt")
    with pytest.raises(ValueError, match="differ"):
        weights.load_state_dict({"weights": torch.tensor([2.0, 1.0, 1.1])}, "prompt")
    ones = SlotWeights(torch.ones(2, dtype=F64))
    ones.set(torch.ones(2))
    assert ones.unit and ones.factors is None
