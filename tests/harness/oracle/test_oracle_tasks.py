"""Enumeration, designs, metrics, the population loss as an expectation, and the CLI."""

import itertools
import json

import pytest
import torch

from auxdpo.cli import main
from auxdpo.harness.lab.problems import PreferenceProblem
from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.designs import design_counts, disagreeing_pairs
from auxdpo.harness.oracle.metrics import pair_agreement
from auxdpo.harness.oracle.solvers import pair_loss_closure
from auxdpo.harness.oracle.tasks import TokenTaskConfig, all_responses, build_token_task
from auxdpo.losses import get_loss
from tolerance import assert_close

DT = torch.float64



@pytest.fixture(scope="module")
def task():
    cfg = TokenTaskConfig(vocab_size=3, response_length=3, prompt_length=2, num_prompts=3,
                          num_heldout=1, hidden_size=8, num_layers=1, warmup_steps=3)
    return build_token_task(cfg, seed=0)


def test_enumeration_covers_every_response_exactly_once():
    responses = all_responses(3, 4)
    assert responses.shape == (81, 4)
    as_tuples = [tuple(r) for r in responses.tolist()]
    assert sorted(as_tuples) == list(itertools.product(range(3), repeat=4))  # each once


def test_log_probs_equal_brute_force_and_normalise(task):
    """Prefix-shared log π(a|s) = Σ_t log p(a_t | s, a_<t) from the full sequence, per a."""
    capacity = FlatCapacity(task.model, "norm")
    logp = task.log_probs_fn(capacity)(capacity.theta0)                  # (4, 27)
    assert_close(torch.logsumexp(logp, dim=1), torch.zeros(4, dtype=DT), ops=100,
                 scale=float(logp.abs().max()))              # 0 ± round-off of log-probs
    responses = all_responses(3, 3)
    with torch.no_grad():
        for s in range(4):
            ids = torch.cat([task.prompts[s].expand(27, 2), responses], dim=1)
            full = torch.log_softmax(task.model(ids).logits, dim=-1)[:, 1:-1]
            brute = full.gather(-1, responses[:, :, None]).squeeze(-1).sum(-1)
            assert_close(logp[s], brute, ops=100)
    assert torch.allclose(task.log_probs_fn(capacity, train_only=True)(capacity.theta0),
                          logp[:3])


@pytest.mark.parametrize("spec", ["norm", "lora:2", "last-block"])
def test_capacity_starts_at_the_base_model(task, spec):
    capacity = FlatCapacity(task.model, spec)
    ids = task.inputs[:5]
    with torch.no_grad():
        assert torch.allclose(capacity.logits(capacity.theta0, ids), task.model(ids).logits)
    assert capacity.dim == {"norm": 16, "lora:2": 2 * 24}.get(spec, capacity.dim)


@pytest.mark.parametrize("spec,where", [("norm", "the final norm"), ("lora:2", "block 0 of 1"),
                                        ("last-block", "block 0 of 1")])
def test_frozen_prefix_runs_once_and_changes_nothing(task, spec, where):
    """The tail path (prefix recorded once per input) gives the whole model's log-probs and
    score matrix A_θ₀ to round-off, away from θ₀ too; ``full`` has no frozen prefix."""
    from auxdpo.harness.oracle.solvers import forward_score_matrix

    tail, whole = FlatCapacity(task.model, spec), FlatCapacity(task.model, spec, tail=False)
    fn_tail, fn_whole = task.log_probs_fn(tail), task.log_probs_fn(whole)
    theta = tail.theta0 + 0.3 * torch.randn(tail.dim, dtype=DT,
                                            generator=torch.Generator().manual_seed(3))
    for point in (tail.theta0, theta):
        assert_close(fn_tail(point), fn_whole(point), ops=100)
        assert_close(forward_score_matrix(fn_tail, point),
                     forward_score_matrix(fn_whole, point), ops=100)
    assert tail.tail_reason.endswith(where) and whole.plan is None
    assert len(tail._captures) == 1                      # one prefix pass for every θ above
    full = FlatCapacity(task.model, "full")
    assert full.plan is None and "outside the blocks" in full.tail_reason


def test_tail_that_disagrees_at_theta0_falls_back_to_the_whole_model(task, monkeypatch):
    capacity = FlatCapacity(task.model, "lora:2")
    plan_logits = capacity.plan.logits
    monkeypatch.setattr(capacity.plan, "logits", lambda *a, **k: plan_logits(*a, **k) + 1e-6)
    ids = task.inputs[:5]
    with torch.no_grad():
        assert_close(capacity.logits(capacity.theta0, ids), task.model(ids).logits, ops=100)
    assert capacity.plan is None and "differ" in capacity.tail_reason


@pytest.mark.parametrize("method", ["dpo", "ipo", "dpop", "auxdpo"])
def test_population_loss_is_the_expected_finite_sample_loss(task, method):
    """Σ n·[p ℓ(a≻a') + (1−p) ℓ(a'≻a)] = E over pairs ∝ n and labels ~ BTL(r*) of the hard
    loss, times N: computed exactly by enumerating every pair and both labels."""
    capacity = FlatCapacity(task.model, "norm")
    fn = task.log_probs_fn(capacity, train_only=True)
    theta0 = capacity.theta0
    theta = theta0 + 0.05 * torch.randn(theta0.shape, generator=torch.Generator()
                                        .manual_seed(3), dtype=DT)
    counts = design_counts("uniform", rho=task.rho(), probs0=fn(theta0).exp())
    problem = PreferenceProblem(task.rho(), task.reward[:3], counts, 2.0)
    delta = 0.1 * torch.randn(3 * 27, generator=torch.Generator().manual_seed(4), dtype=DT)
    use_delta = delta if method == "auxdpo" else None
    population = pair_loss_closure(method, fn, problem, theta0, ipo_length=3)(theta, use_delta)
    logp, ref = fn(theta), fn(theta0)
    scale = 1 / 3 if method == "ipo" else 1.0
    loss_fn, expected = get_loss(method), 0.0
    for s, a, b in itertools.product(range(3), range(27), range(27)):
        n = float(counts[s, a, b])
        if a == b or n == 0:
            continue
        p_ab = float(torch.sigmoid(task.reward[s, a] - task.reward[s, b]))
        for (w, l), prob in (((a, b), p_ab), ((b, a), 1 - p_ab)):   # the two possible labels
            kw = ({"delta_chosen": delta[s * 27 + w].view(1),
                   "delta_rejected": delta[s * 27 + l].view(1)} if use_delta is not None
                  else {})
            hard = loss_fn(scale * logp[s, w].view(1), scale * logp[s, l].view(1),
                           scale * ref[s, w].view(1), scale * ref[s, l].view(1), beta=2.0, **kw)
            expected += n * prob * float(hard.losses[0])
    assert float(population) == pytest.approx(expected, rel=1e-10)


def test_anti_aligned_multiplies_exactly_the_disagreeing_pairs():
    gen = torch.Generator().manual_seed(0)
    probs0 = torch.softmax(torch.randn(2, 5, generator=gen, dtype=DT), dim=1)
    reward = torch.randn(2, 5, generator=gen, dtype=DT)
    scores = torch.randn(2, 5, generator=gen, dtype=DT)
    rho = torch.tensor([0.4, 0.6], dtype=DT)
    anti = design_counts("anti-aligned", rho=rho, probs0=probs0, reward=reward,
                         direction_scores=scores, factor=7.0)
    base = design_counts("on-policy", rho=rho, probs0=probs0)
    assert anti.sum() == pytest.approx(1.0) and torch.allclose(anti, anti.transpose(1, 2))
    assert torch.all(torch.diagonal(anti, dim1=1, dim2=2) == 0)
    ratio = anti / base.clamp_min(1e-300)
    off = ~torch.eye(5, dtype=torch.bool).expand(2, 5, 5)
    bad = disagreeing_pairs(reward, scores) & off
    assert bad.any() and (~bad & off).any()
    assert torch.allclose(ratio[bad] / ratio[~bad & off].mean(), torch.full_like(ratio[bad], 7.))


def test_pair_agreement_hand_case():
    # r* = [0, 1, 2]; change = [0, 2, 1]: pairs (0,1) ok, (0,2) ok, (1,2) reversed → 2/3.
    reward = torch.tensor([[0.0, 1.0, 2.0]], dtype=DT)
    change = torch.tensor([[0.0, 2.0, 1.0]], dtype=DT)
    assert pair_agreement(reward, change) == pytest.approx(2 / 3)
    assert pair_agreement(reward, torch.zeros(1, 3, dtype=DT)) == pytest.approx(0.5)  # ties
    weight = torch.zeros(1, 3, 3, dtype=DT)
    weight[0, 1, 2] = weight[0, 2, 1] = 1.0
    assert pair_agreement(reward, change, weight) == 0.0


def test_cli_json_tiny_run(tmp_path, capsys):
    code = main(["oracle", "--vocab-size", "3", "--response-length", "2", "--prompt-length",
                 "2", "--prompts", "3", "--heldout", "1", "--hidden", "8", "--layers", "1",
                 "--warmup-steps", "2", "--seeds", "2", "--beta", "50", "--max-iter", "60",
                 "--quiet", "--json",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["gap_closed"]) == {"dpo", "ipo", "dpop", "auxdpo", "rlhf_local"}
    assert out["gap_closed"]["rlhf_local"]["mean"] == pytest.approx(1.0, abs=0.05)
    assert (tmp_path / "run" / "results.md").read_text().startswith("| capacity")
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    assert len(rows) == 2 * 7                       # seeds × (base, rlhf, rlhf_local, 4)


def test_solves_stopped_at_the_iteration_cap_are_flagged(tmp_path, capsys):
    tiny = ["oracle", "--vocab-size", "3", "--response-length", "2", "--prompt-length", "2",
            "--prompts", "3", "--heldout", "1", "--hidden", "8", "--layers", "1",
            "--warmup-steps", "2", "--seeds", "2", "--beta", "50", "--methods", "dpo", "ipo",
            "--quiet"]
    assert main(tiny + ["--max-iter", "2", "--out", str(tmp_path / "capped")]) == 0
    table = capsys.readouterr().out
    summary = json.loads((tmp_path / "capped" / "results.json").read_text())["summary"]
    capped = {e["method"]: e["capped"] for e in summary}
    assert capped["dpo"] == capped["ipo"] == 2    # 2 L-BFGS iterations: not enough
    assert capped["base"] == capped["rlhf_local"] == 0    # closed forms are never capped
    assert "| dpo ⚠ | 2 | 2 |" in table and "stopped at the iteration cap" in table
    assert main(tiny + ["--max-iter", "200", "--out", str(tmp_path / "free")]) == 0
    table = capsys.readouterr().out
    summary = json.loads((tmp_path / "free" / "results.json").read_text())["summary"]
    assert all(e["capped"] == 0 for e in summary) and "⚠" not in table


def test_cli_relinearised_row_records_its_rounds(tmp_path, capsys):
    code = main(["oracle", "--vocab-size", "3", "--response-length", "2", "--prompt-length",
                 "2", "--prompts", "3", "--heldout", "1", "--hidden", "8", "--layers", "1",
                 "--warmup-steps", "2", "--seeds", "1", "--beta", "2", "--max-iter", "60",
                 "--methods", "auxdpo", "--relinearise", "3", "--quiet", "--json",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    assert set(json.loads(capsys.readouterr().out)["gap_closed"]) == {
        "auxdpo", "auxdpo-relin", "rlhf_local"}
    rows = {r["method"]: r for r in json.loads(
        (tmp_path / "run" / "results.json").read_text())["rows"]}
    gaps = rows["auxdpo-relin"]["round_gaps"]
    assert len(gaps) == 3 and gaps[-1] == rows["auxdpo-relin"]["gap_closed"]
    assert gaps[0] == rows["auxdpo"]["gap_closed"]                # round 1 is plain AuxDPO
    assert abs(1 - gaps[-1]) < abs(1 - gaps[0])                   # closer to the exact optimum
    assert "round_gaps" not in rows["auxdpo"]


def test_method_names_and_config_validation():
    from auxdpo.harness.oracle.cells import method_names
    from auxdpo.harness.oracle.runner import OracleConfig

    names = [n for n, _, _ in method_names(OracleConfig())]
    assert names == ["dpo", "ipo", "dpop", "auxdpo"]
    sweep = OracleConfig(aux_modes=["projection", "global"], lambdas=[1.0, 100.0])
    assert [n for n, _, _ in method_names(sweep)][3:] == [
        "auxdpo-projection", "auxdpo-global-lam1", "auxdpo-global-lam100"]
    for bad in ({"design": "nope"}, {"regime": "nope"}, {"betas": [0.0]},
                {"capacities": ["bogus"]}, {"methods": ["ppo"]}):
        with pytest.raises(ValueError):
            OracleConfig(**bad)
