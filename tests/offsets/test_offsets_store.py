"""AuxOffsets against brute force: A built column by column over the whole dataset by
explicit backward passes, float64, on a tiny GPT-2 with sdpa attention."""

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F

from auxdpo.offsets import AuxOffsets
from auxdpo.offsets.products import ReferenceProducts
from offsets_fixtures import (
    brute_force_dataset_matrix,
    dataset_batches,
    select,
    tiny_gpt2,
)
from tolerance import assert_close, roundoff

N_EXAMPLES = 12
F64 = torch.float64


@pytest.fixture(scope="module")
def world():
    """(model, dataset batches, brute-force A (d × 2n), per-example model margins)."""
    model = tiny_gpt2("sdpa", layers=1)
    dataset = dataset_batches(N_EXAMPLES, 4)
    names = [n for n, _ in model.named_parameters()]
    matrix = brute_force_dataset_matrix(model, dataset, names, N_EXAMPLES)
    margins = torch.linspace(-2, 2, N_EXAMPLES, dtype=F64)
    return model, dataset, matrix, margins


def make(world, **kwargs):
    model = world[0]
    kwargs.setdefault("dtype", F64)
    return AuxOffsets(N_EXAMPLES, ReferenceProducts(model), **kwargs)


def dpo_backward(offsets, batch, margins, global_batch_size):
    """The trainer's part: mean-over-G AuxDPO-style loss of the batch, backward into δ."""
    chosen, rejected = offsets.deltas(batch["aux_index"])
    m = margins[batch["aux_index"]]
    loss = -F.logsigmoid(m + chosen - rejected).sum() / global_batch_size
    loss.backward()
    offsets.accumulate(batch)


def dpo_grad(delta, rows, margins, global_batch_size):
    """Brute-force ∂(mean DPO loss)/∂δ, (n, 2)."""
    delta = delta.clone().requires_grad_(True)
    index = torch.tensor(rows)
    loss = -F.logsigmoid(margins[index] + delta[index, 0] - delta[index, 1]).sum()
    (loss / global_batch_size).backward()
    return delta.grad


def flat(delta):
    return delta.reshape(-1)                   # (δ_0w, δ_0l, δ_1w, ...), A's column order


def random_rows(gen, size=4):
    return torch.randperm(N_EXAMPLES, generator=gen)[:size].tolist()


def test_global_penalty_gradient_and_u_match_brute_force(world):
    _, dataset, matrix, margins = world
    # λ and lr keep SGD stable: the penalty's curvature on a batch is ~(n/G)·2λ/(2n)²·‖A‖²
    lam, lr, n, size = 1.0, 0.05, N_EXAMPLES, 4
    offsets = make(world, mode="global", lambda_null=lam, delta_lr=lr, optimizer="sgd")
    offsets.prepare(dataset)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        rows = random_rows(gen, size)
        before = offsets.table()
        u_true = matrix @ flat(before)
        assert_close(offsets.u, u_true, ops=1e3)
        penalty_grad = (n / size) * 2 * lam / (2 * n) ** 2 * (matrix.T @ u_true)
        expected = dpo_grad(before, rows, margins, size) + penalty_grad.view(n, 2)
        dpo_backward(offsets, select(dataset, rows), margins, size)
        metrics = offsets.step(size)
        after = offsets.table()
        assert metrics["aux/penalty"] == pytest.approx(
            lam * float((u_true / (2 * n)).pow(2).sum()), rel=1e-10, abs=1e-14)
        assert_close((before - after)[rows] / lr, expected[rows], ops=1e4)
        others = [i for i in range(n) if i not in rows]
        assert torch.equal(after[others], before[others])
    assert torch.any(offsets.table() != 0)
    u_true = matrix @ flat(offsets.table())
    assert_close(offsets.u, u_true, ops=1e3)
    # ‖Aδ‖/(ā‖δ‖), ā² = ‖A‖_F²/2n: the probe's 16 pairs cover all 12 rows (ω = 1)
    scale = float(matrix.pow(2).sum(0).mean()) ** 0.5
    assert offsets.column_scale == pytest.approx(scale, rel=1e-12)
    assert metrics["aux/null_residual"] == pytest.approx(
        float(u_true.norm() / offsets.table().norm()) / scale, rel=1e-8)
    drifted = offsets.u.clone()
    offsets.recompute_u(dataset)
    assert_close(offsets.u, u_true, ops=1e3)
    assert_close(drifted, offsets.u, ops=1e3)


def _reference_adam(states, delta, rows, grad, lr, betas=(0.9, 0.999), eps=1e-8):
    """Independent per-row Adam with per-row bias correction."""
    for i in rows:
        m, v, t = states.get(i, (torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), 0))
        t += 1
        m = betas[0] * m + (1 - betas[0]) * grad[i]
        v = betas[1] * v + (1 - betas[1]) * grad[i] ** 2
        states[i] = (m, v, t)
        delta[i] -= lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)


def test_lazy_adam_moves_only_batch_rows(world):
    _, dataset, matrix, margins = world
    lam, lr, n, size = 1.0, 0.1, N_EXAMPLES, 4
    offsets = make(world, mode="global", lambda_null=lam, delta_lr=lr)
    offsets.prepare(dataset)
    reference, states = torch.zeros(n, 2, dtype=F64), {}
    gen = torch.Generator().manual_seed(1)
    for _ in range(12):
        rows = random_rows(gen, size)
        before = offsets.table()
        u_true = matrix @ flat(reference)
        grad = dpo_grad(reference, rows, margins, size) + (
            (n / size) * 2 * lam / (2 * n) ** 2 * (matrix.T @ u_true)).view(n, 2)
        _reference_adam(states, reference, rows, grad, lr)
        dpo_backward(offsets, select(dataset, rows), margins, size)
        offsets.step(size)
        after = offsets.table()
        others = [i for i in range(n) if i not in rows]
        assert torch.equal(after[others], before[others])     # momentum does not leak
        assert_close(after, reference, ops=1e4)
    assert_close(offsets.u, matrix @ flat(reference), ops=1e4)


@pytest.mark.parametrize("amp_sign", [+1, -1])
def test_batch_mode_matches_brute_force(world, amp_sign):
    _, dataset, matrix, margins = world
    lam_null, lam_amp, lr, size = 0.5, 0.3, 0.05, 4
    with warnings.catch_warnings():          # amp_sign=-1 without a cap: warned, intended
        warnings.simplefilter("ignore", RuntimeWarning)
        offsets = make(world, mode="batch", lambda_null=lam_null, lambda_amp=lam_amp,
                       amp_sign=amp_sign, delta_lr=lr, optimizer="sgd")
    offsets.prepare(dataset)
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        rows = random_rows(gen, size)
        before = offsets.table()
        columns = torch.cat([matrix[:, [2 * i for i in rows]], matrix[:, [2 * i + 1 for i in rows]]],
                            dim=1)                                           # A_B, (d, 2B)
        values = torch.cat([before[rows, 0], before[rows, 1]])               # δ_B
        image = columns @ values
        responses = 2 * size
        penalty = (lam_null * image.pow(2).sum() / responses**2
                   + amp_sign * lam_amp * values.pow(2).sum() / responses)
        grad_b = (2 * lam_null / responses**2 * (columns.T @ image)
                  + 2 * amp_sign * lam_amp / responses * values)
        expected = dpo_grad(before, rows, margins, size)
        expected[rows, 0] += grad_b[:size]
        expected[rows, 1] += grad_b[size:]
        dpo_backward(offsets, select(dataset, rows), margins, size)
        metrics = offsets.step(size)
        assert metrics["aux/penalty"] == pytest.approx(float(penalty), rel=1e-10, abs=1e-14)
        after = offsets.table()
        assert_close((before - after)[rows] / lr, expected[rows], ops=1e3)
    assert offsets.u is None


def test_batch_mode_on_the_whole_dataset_is_global_mode(world):
    """With G = n the batch penalty λ‖A_Bδ_B/(2G)‖² is the global λ‖Aδ/(2n)‖²."""
    _, dataset, _, margins = world
    runs = [make(world, mode=mode, lambda_null=1.0, delta_lr=0.05, optimizer="sgd")
            for mode in ("global", "batch")]
    for offsets in runs:
        offsets.prepare(dataset)
        for _ in range(3):
            for batch in dataset:
                dpo_backward(offsets, batch, margins, N_EXAMPLES)
            metrics = offsets.step(N_EXAMPLES)
        offsets.final_penalty = metrics["aux/penalty"]
    assert_close(runs[0].table(), runs[1].table(), ops=100)
    assert runs[0].final_penalty == pytest.approx(runs[1].final_penalty, rel=1e-10)
    assert runs[0].final_penalty > 0


@pytest.mark.parametrize("mode", ["global", "batch"])
def test_accumulation_equals_one_big_batch(world, mode):
    _, dataset, _, margins = world
    kwargs = dict(mode=mode, lambda_null=1.0, delta_lr=0.1)
    if mode == "batch":
        kwargs["lambda_amp"] = 0.1
    big, small = make(world, **kwargs), make(world, **kwargs)
    for offsets in (big, small):
        offsets.prepare(dataset)
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        rows = random_rows(gen, 8)
        dpo_backward(big, select(dataset, rows), margins, 8)
        big.step(8)
        for half in (rows[:4], rows[4:]):
            dpo_backward(small, select(dataset, half), margins, 8)
        small.step(8)
        assert_close(small.table(), big.table(), ops=1e3)
        if mode == "global":
            assert_close(small.u, big.u, ops=1e3)


def _run(offsets, dataset, margins, seed, steps):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = random_rows(gen, 4)
        dpo_backward(offsets, select(dataset, rows), margins, 4)
        offsets.step(4)


@pytest.mark.parametrize("mode", ["global", "batch"])
def test_state_dict_round_trip(world, mode):
    _, dataset, _, margins = world
    kwargs = dict(mode=mode, lambda_null=1.0, delta_lr=0.1, delta_cap=3.0)
    uninterrupted = make(world, **kwargs)
    uninterrupted.prepare(iter(dataset))
    _run(uninterrupted, dataset, margins, seed=4, steps=4)
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)
    _run(uninterrupted, dataset, margins, seed=5, steps=4)

    buffer.seek(0)
    resumed = make(world, **kwargs)
    resumed.load_state_dict(torch.load(buffer))
    _run(resumed, dataset, margins, seed=5, steps=4)
    assert torch.equal(resumed.table(), uninterrupted.table())
    assert resumed.num_steps == uninterrupted.num_steps == 8
    if mode == "global":
        assert torch.equal(resumed.u, uninterrupted.u)
        # With the dataset known, resuming recomputes u from scratch: equal up to round-off.
        buffer.seek(0)
        recomputed = make(world, **kwargs)
        recomputed.prepare(dataset)
        recomputed.load_state_dict(torch.load(buffer))
        _run(recomputed, dataset, margins, seed=5, steps=4)
        assert_close(recomputed.u, uninterrupted.u, ops=1e3)


def test_recompute_every_and_cap(world):
    _, dataset, matrix, margins = world
    offsets = make(world, mode="global", lambda_null=1.0, delta_lr=2.0, delta_cap=0.5,
                   recompute_every=3)
    offsets.prepare(dataset)
    _run(offsets, dataset, margins, seed=6, steps=6)
    delta = offsets.table()
    assert delta.abs().max() <= 0.5 and delta.abs().max() > 0.3      # bounded, and active
    assert_close(offsets.u, matrix @ flat(delta), ops=1e3)
    with pytest.raises(ValueError, match="re-iterable"):
        make(world, mode="global", recompute_every=3).prepare(iter(dataset))


def test_projection_keeps_delta_in_null_space(world):
    model, dataset, _, margins = world
    names = ["transformer.ln_f.weight", "transformer.ln_f.bias"]        # d = 32
    products = ReferenceProducts(model, names)
    n = 40                                                              # 2n = 80 > d = 32
    data = dataset_batches(n, 8, seed=100)
    matrix = brute_force_dataset_matrix(model, data, names, n)
    offsets = AuxOffsets(n, products, mode="projection", delta_lr=0.1, dtype=F64)
    offsets.prepare(data)
    rank = int(torch.linalg.matrix_rank(matrix))
    assert offsets.rank == rank and offsets.basis.shape == (2 * n, 2 * n - rank)
    assert_close(offsets.basis.T @ offsets.basis, torch.eye(2 * n - rank, dtype=F64), ops=1e3)
    assert_close(offsets.jacobian_t, matrix.T, ops=100)
    row_margins = torch.linspace(-2, 2, n, dtype=F64)
    gen = torch.Generator().manual_seed(7)
    for _ in range(10):
        rows = torch.randperm(n, generator=gen)[:8].tolist()
        dpo_backward(offsets, select(data, rows), row_margins, 8)
        metrics = offsets.step(8)
    delta = flat(offsets.table())
    assert delta.norm() > 0.1
    # ‖Aδ‖/‖δ‖ of a projected δ: round-off relative to ‖A‖, not to the residual's size.
    bound = roundoff(ops=1e3, scale=float(matrix.norm()))
    assert float((matrix @ delta).norm() / delta.norm()) < bound
    assert metrics["aux/null_residual"] < bound
    assert metrics["aux/null_dim"] == 2 * n - rank


def test_projection_state_dict_round_trip(world):
    model, _, _, _ = world
    names = ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    n = 20
    data = dataset_batches(n, 4, seed=200)
    margins = torch.linspace(-1, 1, n, dtype=F64)

    def fresh():
        offsets = AuxOffsets(n, ReferenceProducts(model, names), mode="projection",
                             delta_lr=0.1, dtype=F64)
        offsets.prepare(data)
        return offsets

    def run(offsets, seed):
        gen = torch.Generator().manual_seed(seed)
        for _ in range(3):
            rows = torch.randperm(n, generator=gen)[:4].tolist()
            dpo_backward(offsets, select(data, rows), margins, 4)
            offsets.step(4)

    uninterrupted = fresh()
    run(uninterrupted, seed=8)
    state = copy.deepcopy(uninterrupted.state_dict())
    run(uninterrupted, seed=9)
    resumed = fresh()
    resumed.load_state_dict(state)
    run(resumed, seed=9)
    assert torch.equal(resumed.table(), uninterrupted.table())
    assert resumed.table().norm() > 0


def test_projection_refusal_and_trivial_null_space(world):
    model, dataset, _, _ = world
    products = ReferenceProducts(model)
    with pytest.raises(ValueError, match="mode='global'") as info:
        AuxOffsets(10**6, products, mode="projection", memory_budget_bytes=2**30)
    assert "GiB" in str(info.value) and str(products.dim) in str(info.value)
    tiny = AuxOffsets(2, products, mode="projection", dtype=F64)
    with pytest.warns(RuntimeWarning, match="reduces to DPO"):
        tiny.prepare([select(dataset, [0, 1])])
    chosen, rejected = tiny.deltas(torch.tensor([0, 1]))
    assert torch.equal(chosen, torch.zeros(2, dtype=F64)) and tiny.basis.shape[1] == 0


def test_bad_input(world):
    _, dataset, _, margins = world
    with pytest.raises(ValueError, match="mode"):
        make(world, mode="nope")
    with pytest.raises(ValueError, match="lambda_amp"):
        make(world, mode="global", lambda_amp=0.1)
    with pytest.raises(ValueError, match="delta_cap"):
        make(world, mode="projection", delta_cap=1.0)
    with pytest.raises(ValueError, match="amp_sign"):
        make(world, mode="batch", amp_sign=2)
    with pytest.warns(RuntimeWarning, match="delta_cap"):
        make(world, mode="batch", amp_sign=-1, lambda_amp=0.1)
    offsets = make(world, mode="global")
    with pytest.raises(ValueError, match="out of range"):
        offsets.deltas(torch.tensor([0, N_EXAMPLES]))
    with pytest.raises(ValueError, match="accumulate"):
        offsets.step(4)
    bad = copy.copy(select(dataset, [0, 1]))
    bad["aux_index"] = torch.tensor([0])
    with pytest.raises(ValueError, match="2B rows"):
        offsets.accumulate(bad)
    offsets.prepare(dataset)
    dpo_backward(offsets, select(dataset, [0, 1, 2, 3]), margins, 4)
    offsets.step(4)
    with pytest.raises(ValueError, match="missing"):
        offsets.recompute_u(dataset[1:])


def test_low_precision_model_keeps_offsets_in_float32():
    """A bf16 model: δ and u are stored in float32 and track a float32 run closely."""
    data = dataset_batches(8, 4, seed=300)
    margins = torch.ones(8)
    runs = []
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_gpt2("sdpa", layers=1).to(dtype)
        offsets = AuxOffsets(8, ReferenceProducts(model), mode="global", lambda_null=1.0,
                             delta_lr=0.1, dtype=dtype)
        offsets.prepare(data)
        for step in range(4):
            dpo_backward(offsets, data[step % 2], margins, 4)
            offsets.step(4)
        assert offsets.table().dtype == offsets.u.dtype == torch.float32
        runs.append(offsets)
    torch.testing.assert_close(runs[1].table(), runs[0].table(), rtol=0.02, atol=1e-3)
    torch.testing.assert_close(runs[1].u, runs[0].u, rtol=0.05, atol=0.05)
