"""One population-regime cell: every β and method, base and RLHF rows anchor the gap."""

import pytest

from auxdpo.harness.oracle.population import population_cell
from auxdpo.harness.oracle.runner import OracleConfig
from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task

TASK = dict(vocab_size=3, response_length=2, prompt_length=2, num_prompts=3, num_heldout=1,
            hidden_size=8, num_layers=1, warmup_steps=2)


def test_population_cell_rows_by_hand_anchors():
    config = OracleConfig(betas=[5.0, 50.0], methods=["dpo", "auxdpo"], max_iter=60,
                          task=TokenTaskConfig(**TASK))
    task = build_token_task(config.task, seed=0)
    messages = []
    rows = population_cell(config, task, "norm", 0, messages.append)
    assert [(r["beta"], r["method"]) for r in rows] == [
        (b, m) for b in (5.0, 50.0) for m in ("base", "rlhf", "rlhf_local", "dpo", "auxdpo")]
    assert len(messages) == 4                                    # one line per fitted method
    for row in rows:
        assert (row["seed"], row["capacity"], row["dim"], row["responses"]) == (0, "norm",
                                                                                  16, 27)
    base = [r for r in rows if r["method"] == "base"]
    rlhf = [r for r in rows if r["method"] == "rlhf"]
    assert all(r["gap_closed"] == 0.0 and r["kl"] == 0.0 for r in base)
    assert all(r["gap_closed"] == pytest.approx(1.0, rel=1e-12) for r in rlhf)
    # local RLHF is the β → ∞ limit of exact RLHF: closer at β = 50 than at β = 5
    local = {r["beta"]: r["gap_closed"] for r in rows if r["method"] == "rlhf_local"}
    assert abs(1 - local[50.0]) < abs(1 - local[5.0])
