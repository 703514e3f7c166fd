"""Lab experiments, vectorised grid solver, Newton helpers and the ``auxdpo lab`` CLI."""

import csv

import pytest
import torch

from auxdpo.harness.lab.experiments import (
    beta_sweep,
    loglinear_gap,
    run_demo,
    sensitivity,
)

D64 = torch.float64


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


