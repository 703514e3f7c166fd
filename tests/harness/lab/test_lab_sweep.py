"""The Prop. 2 grid: the interior simplex grid and the vectorised grid solver."""


import pytest
import torch

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
