"""Method cells: variant names, the exact RLHF reference of a cell."""

import pytest
import torch

from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup, exact_rlhf, method_variants
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.sampling import DEFAULT_DELTA_SCALE, FiniteConfig
from auxdpo.harness.oracle.solvers import rlhf_objective
from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task
from oracle_fixtures import TINY


def test_variant_names_call_the_defaults_auxdpo():
    config = OracleConfig(regime="finite", methods=["dpo", "auxdpo"], finite=FiniteConfig(
        solver="full-batch", delta_scales=[0.5, DEFAULT_DELTA_SCALE, None]))
    names = [name for name, _, _ in method_variants(config)]
    assert names == ["dpo", "auxdpo-sigma0.5", "auxdpo", "auxdpo-noprior", "iw-dpo"]
    scales = [opt.get("delta_scale", "-") for _, _, opt in method_variants(config)]
    assert scales == ["-", 0.5, DEFAULT_DELTA_SCALE, None, "-"]


def test_cell_setup_and_exact_rlhf_on_a_tiny_task():
    """The cell's counts are a distribution over distinct pairs, A_θ₀ is (d, S·A), and the
    exact RLHF fit is at least as good as both of its starts (θ₀ and the local step)."""
    config = OracleConfig(design="on-policy", max_iter=60,
                          task=TokenTaskConfig(**{**TINY, "warmup_steps": 2}))
    task = build_token_task(config.task, seed=0)
    capacity = FlatCapacity(task.model, "norm")
    cell = cell_setup(config, task, capacity, seed=0)
    S, A = task.num_prompts, cell["counts"].shape[1]
    assert cell["A"].shape == (capacity.dim, S * A)
    assert float(cell["counts"].sum()) == pytest.approx(1.0, rel=1e-12)
    assert torch.all(torch.diagonal(cell["counts"], dim1=1, dim2=2) == 0)
    fit, local = exact_rlhf(config, cell, task.reward, beta=5.0)

    def j(theta):
        return float(rlhf_objective(cell["fn_train"](theta), cell["logp0"][:S],
                                    task.reward[:S], cell["rho"], 5.0))

    with torch.no_grad():
        assert fit.objective == pytest.approx(j(fit.theta), rel=1e-12)
        assert j(fit.theta) >= max(j(cell["theta0"]), j(local))
