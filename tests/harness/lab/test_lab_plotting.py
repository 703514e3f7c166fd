"""Lab figures: both plots write a PNG where they are told and return its path."""

import torch

from auxdpo.harness.lab.plotting import plot_beta_sweep, plot_sensitivity
from auxdpo.harness.lab.sweep import simplex_grid

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_sensitivity_writes_a_png(tmp_path):
    grid = simplex_grid(6)
    change = {"dpo": grid[:, 0] - grid[:, 2], "auxdpo": torch.zeros(grid.shape[0],
                                                                  dtype=grid.dtype)}
    path = plot_sensitivity(tmp_path / "sens.png", grid, change, beta=10.0)
    assert path == tmp_path / "sens.png"
    assert path.read_bytes()[:8] == PNG


def test_plot_beta_sweep_writes_a_png(tmp_path):
    rows = [{"beta": b, "auxdpo_rel_theta_gap": 1 / b, "auxdpo_gain_shortfall": 1 / b ** 2,
             "dpo_gain_shortfall": 0.3} for b in (1.0, 10.0, 100.0)]
    path = plot_beta_sweep(str(tmp_path / "beta.png"), rows)
    assert path.name == "beta.png" and path.read_bytes()[:8] == PNG
