"""End to end on a tiny model and real rows (slow; skipped when ../shared/data is absent).

The full smoke preset is the documented command ``auxdpo protocol run --preset smoke --out
DIR`` (docs/protocol.md); this test runs a reduced grid of it through the real trainer.
"""

import os

import pytest

from auxdpo.harness.protocol.smoke import smoke_data_missing, smoke_recipe_dict

pytestmark = pytest.mark.slow


def _recipe(epochs, methods, **extra):
    from auxdpo.harness.protocol.recipe import recipe_from_dict

    values = smoke_recipe_dict()
    values["data"].update(max_rows=40, max_ood_pairs=16)
    values["train"].update(num_train_epochs=epochs, batch_size=8)
    values["train"].setdefault("extra", {}).update(extra)
    values["grid"] = {"methods": methods, "settings": ["id", "ood"], "datasets": ["mmlu-pro"],
                      "capacities": ["lora:4"], "seeds": 1}
    return recipe_from_dict(values)


@pytest.fixture(autouse=True)
def _needs_data():
    missing = smoke_data_missing(smoke_recipe_dict())
    if missing:
        pytest.skip(f"real rows absent: {missing}")
    import torch

    torch.set_num_threads(1)


def test_real_runs_write_results_tables_and_resume(tmp_path):
    from auxdpo.harness.protocol.runner import run_protocol
    from auxdpo.harness.protocol.store import read_result

    out = str(tmp_path)
    recipe = _recipe(2, ["dpo", "auxdpo"])
    progress = run_protocol(recipe, out, progress=False)
    assert (progress.total, progress.ran) == (4, 4)
    runs = {name: read_result(os.path.join(out, "runs", name))
            for name in os.listdir(os.path.join(out, "runs"))}
    dpo = runs["mmlu-pro__id__dpo__cap-lora-4__seed0.json"]
    aux = runs["mmlu-pro__id__auxdpo__cap-lora-4__seed0.json"]
    assert dpo["train"]["steps"] == 2 * 4  # 32 pairs / 8 per step × 2 epochs
    assert dpo["train"]["train_loss"] != aux["train"]["train_loss"]  # δ acts in epoch 2
    base = read_result(os.path.join(out, "base", "mmlu-pro.json"))
    assert base["metrics"]["pairwise"]["n_pairs"] == 8  # round(0.2 · 40) held-out questions
    assert base["metrics"]["pairwise"]["implicit_reward_accuracy"] is None
    assert os.path.isfile(os.path.join(out, "tables", "table1.md"))
    assert os.path.isfile(os.path.join(out, "figures", "accuracy_vs_capacity.png"))
    again = run_protocol(recipe, out, progress=False)
    assert (again.ran, again.skipped) == (0, 4)


def _flat(tree, prefix=""):
    """Nested metrics as one {path: number or value} dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}/{key}"))
    return out


def test_one_epoch_auxdpo_reproduces_dpo(tmp_path):
    """Row keys: δ_i changes only after pair i's own step, so in a single epoch every loss
    sees δ = 0. (Response keys share δ between MMLU-Pro's pairs of one question.)"""
    from auxdpo.harness.protocol.runner import run_protocol
    from auxdpo.harness.protocol.store import read_result

    out = str(tmp_path)
    run_protocol(_recipe(1, ["dpo", "auxdpo"], aux_offsets="row"), out, progress=False,
                 report=False)
    for setting in ("id", "ood"):
        dpo, aux = (read_result(os.path.join(
            out, "runs", f"mmlu-pro__{setting}__{m}__cap-lora-4__seed0.json")) for m in
            ("dpo", "auxdpo"))
        # AuxDPO's reference log-probs come from its products pass (another kernel route):
        # equal to float32 round-off, not bit for bit.
        assert aux["train"]["train_loss"] == pytest.approx(dpo["train"]["train_loss"],
                                                           rel=1e-5)
        assert _flat(aux["metrics"]) == pytest.approx(_flat(dpo["metrics"]), rel=1e-4,
                                                      abs=1e-6)
