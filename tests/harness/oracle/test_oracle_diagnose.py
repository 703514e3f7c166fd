"""`auxdpo.diagnose`'s local model against the oracle (benchmarks/diagnose_oracle.py): its
quick path on a case where DPO's true gap is clearly negative, and its RLHF step against
:func:`auxdpo.geometry.local_rlhf_step` on a full-support sample."""

import sys
from pathlib import Path

import torch

from auxdpo.diagnose.local import (
    Comparisons,
    local_model,
    policy_weights,
    reward_precision,
    score_coordinates,
)
from auxdpo.geometry import base_weights, local_rlhf_step
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.solvers import forward_score_matrix
from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task
from tolerance import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

DT = torch.float64
# V = 3, L = 2, 4 prompts, width 8, one block: 36 responses, d = 16 (norm).
SMALL = TokenTaskConfig(vocab_size=3, response_length=2, prompt_length=2, num_prompts=4,
                        num_heldout=1, hidden_size=8, num_layers=1, warmup_steps=30)


def test_quick_path_predicts_the_sign_of_a_clearly_negative_dpo_gap():
    from diagnose_oracle import quick

    # anti-aligned, β = 100, n = 1000, seed 0: DPO's true gap −1.17 (measured), far below 0.
    result = quick(task=SMALL, pairs=1000, seed=0, log=lambda message: None)
    (point,) = result["points"]
    assert point["true_dpo"] < -0.5
    assert point["pred_dpo"] < 0
    assert point["true_auxdpo"] > point["true_dpo"]


def test_full_support_rlhf_step_is_local_rlhf_step():
    task = build_token_task(SMALL, 0)
    capacity = FlatCapacity(task.model, "norm", seed=0)
    fn = task.log_probs_fn(capacity, train_only=True)
    theta0 = capacity.theta0
    with torch.no_grad():
        logp0 = fn(theta0)                                               # (S, A)
    A = forward_score_matrix(fn, theta0)                                 # (d, S·A)
    S, nA = logp0.shape
    reward = task.reward[:S].reshape(-1)
    first, second = torch.triu_indices(nA, nA, offset=1)
    offset = (torch.arange(S) * nA)[:, None]
    first, second = (first + offset).reshape(-1), (second + offset).reshape(-1)
    prompt = torch.arange(S).repeat_interleave(nA)
    comparisons = Comparisons(prompt, first, second,
                              torch.sigmoid(reward[first] - reward[second]))
    weights = policy_weights(prompt, logp0.reshape(-1))
    rho = task.rho()
    assert_close(weights, base_weights(rho, logp0), ops=100)
    coords, basis = score_coordinates(A)
    tau = reward_precision(comparisons, 2.0, 16.0)
    result = local_model(coords, comparisons, reward, weights, tau)
    beta = 100.0
    step = basis @ result.steps["rlhf"] / beta                          # θ − θ₀ = U y / β
    expected = local_rlhf_step(A, base_weights(rho, logp0), reward, beta, theta0) - theta0
    assert expected.norm() > 0
    assert_close(step, expected, ops=3e4, scale=float(expected.abs().max()))
