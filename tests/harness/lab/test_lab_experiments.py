"""Lab experiments, vectorised grid solver, Newton helpers and the ``auxdpo lab`` CLI."""

import csv
import json

import pytest
import torch

from auxdpo.cli import main
from auxdpo.harness.lab.experiments import (
    GAP_METHODS,
    PROP2_METHODS,
    beta_sweep,
    loglinear_gap,
    run_demo,
    sensitivity,
)
from auxdpo.harness.lab.newton import batched_newton, bracketed_newton
from auxdpo.harness.lab.policies import three_response_policy
from auxdpo.harness.lab.problems import prop2_problem
from auxdpo.harness.lab.solvers import solve
from auxdpo.harness.lab.sweep import simplex_grid, solve_prop2_grid
from tolerance import assert_close

D64 = torch.float64



def test_simplex_grid_is_interior_and_normalised():
    grid = simplex_grid(6)
    assert grid.shape == (10, 3)
    torch.testing.assert_close(grid.sum(dim=1), torch.ones(10, dtype=D64))
    assert float(grid.min()) == pytest.approx(1 / 6)


def test_grid_solver_matches_the_generic_solver():
    grid = simplex_grid(7)[::3]
    thetas = solve_prop2_grid(10.0, grid)
    policy = three_response_policy()
    for i in range(grid.shape[0]):
        problem = prop2_problem(10.0, grid[i].tolist())
        for method, values in thetas.items():
            expected = float(solve(method, policy, problem).theta)
            assert float(values[i]) == pytest.approx(expected, abs=1e-9), (method, i)
    assert_close(thetas["auxdpo"], torch.full_like(thetas["auxdpo"], -0.05), ops=1e3)


def test_newton_helpers_on_closed_forms():
    """Kinked scalar: f(x) = |x − a| + 0.1x² ⇒ x* = a when |0.2a| < 1; smooth batch: quadratics."""
    a = torch.tensor([0.3, -2.0, 7.0], dtype=D64)
    x = bracketed_newton(lambda x: (x - a).abs() + 0.1 * x ** 2, torch.zeros(3, dtype=D64))
    torch.testing.assert_close(x, torch.tensor([0.3, -2.0, 5.0], dtype=D64), rtol=0,
                               atol=1e-11)                   # Newton's stopping tolerance
    target = torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=D64)
    scale = torch.tensor([[1.0, 1e4], [3.0, 0.01]], dtype=D64)
    x, ok = batched_newton(lambda x: (scale * (x - target) ** 2).sum(1)
                           + torch.logsumexp(x - target, dim=1),
                           torch.zeros(2, 2, dtype=D64))
    grad = 2 * scale * (x - target) + torch.softmax(x - target, dim=1)
    assert ok and float(grad.abs().max()) < 1e-10


def test_sensitivity_writes_csv_and_png(tmp_path):
    paths, summary = sensitivity(10.0, tmp_path, resolution=8)
    csv_path, png_path = paths
    assert png_path.suffix == ".png" and png_path.stat().st_size > 1000
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 21
    assert list(rows[0])[:3] == ["n12", "n23", "n31"]
    for row in rows:  # AuxDPO's change equals the local RLHF policy's at every grid point
        assert float(row["theta_auxdpo"]) == pytest.approx(-0.05, abs=1e-10)
        assert float(row["reward_change_auxdpo"]) == pytest.approx(0.0170761, abs=1e-6)
    assert summary["auxdpo"]["share_below_base"] == 0.0
    assert summary["dpo"]["share_below_base"] > 0.0  # the n31 corner reverses DPO


def _check_gap_criteria(seeds):
    for skew in (0.0, 1.0, 3.0):
        gap = loglinear_gap(10.0, skew, seeds)
        assert gap["auxdpo"]["mean"] >= 0.95
        assert gap["rlhf_local"]["mean"] >= 0.95
        if skew == 3.0:
            assert gap["dpo"]["min"] < 0.0


def test_loglinear_gap_closed_acceptance_three_seeds():
    _check_gap_criteria(3)


@pytest.mark.slow
def test_loglinear_gap_closed_acceptance_ten_seeds():
    _check_gap_criteria(10)


def test_beta_sweep_rates(tmp_path):
    """Prop. 'error': AuxDPO's relative θ gap is O(1/β) and its gain shortfall O(1/β²)."""
    rows, paths = beta_sweep(tmp_path, betas=(10.0, 100.0))
    assert [p.suffix for p in paths] == [".csv", ".png"]
    small, large = rows
    assert large["auxdpo_rel_theta_gap"] < 0.15 * small["auxdpo_rel_theta_gap"]
    assert large["auxdpo_gain_shortfall"] < 0.02 * small["auxdpo_gain_shortfall"]
    assert large["dpo_gain_shortfall"] > 0.05  # DPO's misspecification does not vanish


def test_run_demo_returns_written_files(tmp_path, capsys):
    paths = run_demo(tmp_path)
    assert all(p.exists() for p in paths) and len(paths) == 3
    assert "prefers_second_best" in capsys.readouterr().out


def test_cli_prop2_json_shape(capsys):
    assert main(["lab", "prop2", "--beta", "10", "--counts", "1,1,100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"theta", "reward", "failures"}
    for key in out:
        assert list(out[key]) == list(PROP2_METHODS)
    assert out["failures"]["dpo"] == ["prefers_second_best", "best_prob_below_base",
                                      "reward_below_base"]
    assert out["theta"]["auxdpo"] == pytest.approx(-0.05, abs=1e-9)


def test_cli_loglinear_json_shapes(capsys):
    args = ["lab", "loglinear", "--beta", "10", "--skew", "1", "--seeds", "1", "--states", "2",
            "--actions", "4", "--dim", "2", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["gap_closed"]
    assert list(out["gap_closed"]) == list(GAP_METHODS)
    assert set(out["gap_closed"]["dpo"]) == {"mean", "min", "max"}
    args[5] = "0,1"
    assert main(args) == 0
    multi = json.loads(capsys.readouterr().out)
    assert [(r["beta"], r["skew"]) for r in multi["results"]] == [(10.0, 0.0), (10.0, 1.0)]


@pytest.mark.parametrize("argv, message", [
    (["lab", "prop2", "--beta", "0"], "--beta must be > 0"),
    (["lab", "prop2", "--beta", "nan"], "finite"),
    (["lab", "prop2", "--counts", "1,-1,1"], "non-negative"),
    (["lab", "prop2", "--counts", "1,1"], "three numbers"),
    (["lab", "prop2", "--dpop-lambda", "-1"], "dpop-lambda"),
    (["lab", "loglinear", "--skew", "-1"], "--skew must be >= 0"),
    (["lab", "loglinear", "--seeds", "0"], "--seeds must be >= 1"),
    (["lab", "sensitivity", "--resolution", "2"], "--resolution"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
