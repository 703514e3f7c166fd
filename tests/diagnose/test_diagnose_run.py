"""``auxdpo diagnose`` on the tiny recipe: the report's keys, the local model's check along
the RLHF step (exact log-probs against the first order), the verdict's rules, whole prompts
kept when the data are cut, and nothing written to the recipe's output folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest
import torch

from auxdpo.cli import main
from auxdpo.diagnose.run import HELPS_MARGIN, LOCAL_LIMIT, subsample_prompts, verdict
from tolerance import assert_close

RECIPE = "examples/tiny_auxdpo.yaml"
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"pairs", "unique_responses", "pairs_per_response", "separable_share", "null_dim",
        "step_cosine", "predicted_gap", "linearisation_error", "verdict"}


@pytest.fixture
def at_root(monkeypatch):
    """The recipe's relative paths resolve from the repository root."""
    monkeypatch.chdir(ROOT)


def _run(capsys, *extra) -> dict:
    assert main(["diagnose", "--config", RECIPE, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_on_the_tiny_recipe_has_every_key_and_writes_nothing(capsys, tmp_path,
                                                                     at_root):
    out = tmp_path / "run"
    report = _run(capsys, "--bootstrap", "3", "--beta", "1000", "--output_dir", str(out))
    assert KEYS <= set(report) and set(report["predicted_gap"]) == {"dpo", "auxdpo"}
    assert report["pairs"] == 24 and report["unique_responses"] == 16
    assert report["pairs_per_response"] == pytest.approx(3.0)
    # Full capacity: far more parameters than responses, so every identified direction is
    # representable (no null space) and DPO's local step is RLHF's.
    assert report["null_dim"] == 0
    assert report["predicted_gap"]["dpo"] == pytest.approx(1.0, abs=1e-4)
    assert report["step_cosine"] == pytest.approx(1.0, abs=1e-4)
    # β = 1000 keeps the step small: the first order holds to well under 1 %; 3 pairs per
    # response are too few for the prediction to be trusted.
    assert report["linearisation_error"] < 0.01 and report["verdict"] == "data-too-thin"
    assert not out.exists()


def test_the_local_check_grows_with_the_step(capsys, at_root):
    """The RLHF step scales as 1/β: 20× the step, a far larger share the first order misses
    (second order: about 20×), until the verdict says the local model does not hold."""
    near = _run(capsys, "--bootstrap", "0", "--beta", "1000")
    far = _run(capsys, "--bootstrap", "0", "--beta", "0.5")
    assert far["linearisation_error"] > 10 * near["linearisation_error"]
    assert far["linearisation_error"] > LOCAL_LIMIT and far["verdict"] == "not-local"


def test_a_capacity_smaller_than_the_responses_leaves_a_null_space(capsys, at_root):
    report = _run(capsys, "--bootstrap", "0", "--tiny_hidden_size", "8", "--capacity",
                  r"regex:^transformer\.ln_f\.bias$", "--beta", "100000")
    assert report["parameters"] == 8
    assert report["null_dim"] == report["identified_directions"] - report["score_rank"] == 4


def _report(**overrides):
    base = {"linearisation_error": 0.01, "pairs_per_response": 30.0,
            "predicted_gap": {"dpo": 0.2, "auxdpo": 0.9}, "uncertainty": {"difference_std": 0.05}}
    base.update(overrides)
    return base


@pytest.mark.parametrize("overrides, expected", [
    ({}, "auxdpo-helps"),
    ({"predicted_gap": {"dpo": 0.85, "auxdpo": 0.9}}, "same"),
    ({"uncertainty": {"difference_std": 0.5}}, "same"),            # within two spreads
    ({"pairs_per_response": 1.0}, "data-too-thin"),
    ({"pairs_per_response": 3.9}, "data-too-thin"),
    ({"pairs_per_response": 4.0}, "auxdpo-helps"),
    ({"linearisation_error": 0.9}, "not-local"),
    ({"linearisation_error": math.nan}, "not-local"),
])
def test_verdict_rules(overrides, expected):
    name, reason = verdict(_report(**overrides))
    assert name == expected and reason
    assert HELPS_MARGIN == 0.1


def test_a_saturated_sketch_adds_its_caveat_to_the_verdict():
    name, reason = verdict(_report())
    sketched = _report(scores={"method": "sketch", "size": 64, "captured": 0.97,
                               "saturated": True})
    assert verdict(sketched) == (name, reason + "; caution: the scores were sketched to 64 "
                                 "directions (97.0% of their squared norm), fewer than their "
                                 "rank, so these are the predictions of a smaller model, "
                                 "which can be misspecified where the real one is not: raise "
                                 "--sketch")
    exact = _report(scores={"method": "sketch", "size": 64, "captured": 1.0,
                            "saturated": False})
    assert verdict(exact) == (name, reason)


def test_subsampling_keeps_whole_prompts():
    rows = datasets.Dataset.from_list(
        [{"prompt": f"p{i % 5}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(20)])
    cut = subsample_prompts(rows, 9, seed=3)
    prompts = cut["prompt"]
    assert 0 < len(cut) <= 9
    for prompt in set(prompts):                                  # every pair of a kept prompt
        assert prompts.count(prompt) == 4
    assert subsample_prompts(rows, 100) is rows


def test_logps_at_is_the_exact_counterpart_of_the_first_order(at_root):
    """products.logps_at(batch, 0) = logps(batch), and for a small step the exact change
    agrees with A_Bᵀ·step to second order."""
    from auxdpo.offsets.products import ReferenceProducts
    from auxdpo.train.tiny import build_tiny_model
    from offsets_fixtures import preference_batch

    model = build_tiny_model("gpt2", num_layers=1, hidden_size=16, dtype=torch.float64)
    products = ReferenceProducts(model, jvp_method="forward")
    batch = preference_batch(2, seed=5)
    zero = torch.zeros(products.dim, dtype=torch.float64)
    assert_close(products.logps_at(batch, zero), products.logps(batch), ops=100)
    direction = torch.randn(products.dim, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
    first = products.jacobian(batch) @ direction
    errors = []
    for size in (1e-3, 1e-4):
        change = products.logps_at(batch, size * direction) - products.logps(batch)
        errors.append(float((change - size * first).abs().max()))
    assert errors[1] < errors[0] / 50                          # second order: 100× smaller
