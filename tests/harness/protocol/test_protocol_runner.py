"""The resumable loop, with injected train/score functions (no models)."""

import json
import os

import pytest
from protocol_fakes import Interrupting, fake_base, small_recipe

from auxdpo.harness.protocol.recipe import expand_grid
from auxdpo.harness.protocol.runner import run_protocol
from auxdpo.harness.protocol.store import base_path, read_result, result_path


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_every_run_writes_one_result_file(tmp_path):
    recipe = small_recipe(methods=["dpo"], settings=["id"], datasets=["mmlu-pro"])
    runner = Interrupting()
    progress = run_protocol(recipe, str(tmp_path), run_fn=runner, base_fn=fake_base,
                            progress=False, report=False)
    assert (progress.total, progress.ran, progress.skipped) == (4, 4, 0)
    for run in expand_grid(recipe):
        record = read_result(result_path(str(tmp_path), run))
        assert record["run"] == {"dataset": "mmlu-pro", "setting": "id", "method": "dpo",
                                 "capacity": run.capacity, "seed": run.seed}
        assert record["preset"] == {"50%": "last:0.5", "100%": "full"}[run.capacity]
    assert read_result(base_path(str(tmp_path), "mmlu-pro"))["metrics"]["pairwise"][
        "logp_accuracy"] == 0.5


def test_interrupted_protocol_resumes_without_losing_or_corrupting_runs(tmp_path):
    out = str(tmp_path)
    recipe = small_recipe()
    total = len(expand_grid(recipe))  # 4 methods × 2 settings × 2 data sets × 2 caps × 2 seeds
    first = Interrupting(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(recipe, out, run_fn=first, base_fn=fake_base, progress=False)
    finished = _files(os.path.join(out, "runs"))
    assert len(finished) == 5 and all(not name.startswith(".") for name in finished)
    snapshot = {name: (tmp_path / "runs" / name).read_bytes() for name in finished}
    for name in finished:
        json.loads(snapshot[name])  # every file is complete JSON

    second = Interrupting()
    progress = run_protocol(recipe, out, run_fn=second, base_fn=fake_base, progress=False)
    assert (progress.total, progress.skipped, progress.ran) == (total, 5, total - 5) == (64, 5, 59)
    assert not set(second.calls) & {name[:-5] for name in finished}  # nothing redone
    assert set(first.calls) | set(second.calls) == {run.run_id for run in expand_grid(recipe)}
    for name, data in snapshot.items():  # finished files untouched
        assert (tmp_path / "runs" / name).read_bytes() == data
    assert len(_files(os.path.join(out, "runs"))) == total
    assert not [n for n in os.listdir(os.path.join(out, "runs")) if n.startswith(".tmp")]

    third = Interrupting()  # a third invocation has nothing to do
    progress = run_protocol(recipe, out, run_fn=third, base_fn=fake_base, progress=False)
    assert (progress.ran, third.calls) == (0, [])


def test_unreadable_result_file_is_redone(tmp_path):
    recipe = small_recipe(methods=["dpo"], settings=["id"], datasets=["mmlu-pro"], seeds=1,
                          capacities=["50%"])
    (run,) = expand_grid(recipe)
    os.makedirs(tmp_path / "runs")
    with open(result_path(str(tmp_path), run), "w") as handle:
        handle.write('{"metrics": {"pairw')  # a truncated file (e.g. written by hand)
    runner = Interrupting()
    run_protocol(recipe, str(tmp_path), run_fn=runner, base_fn=fake_base, progress=False,
                 report=False)
    assert runner.calls == [run.run_id]
    assert read_result(result_path(str(tmp_path), run)) is not None


def test_grid_can_grow_but_training_settings_cannot_change(tmp_path):
    out = str(tmp_path)
    small = small_recipe(methods=["dpo"], settings=["id"], datasets=["mmlu-pro"], seeds=1)
    run_protocol(small, out, run_fn=Interrupting(), base_fn=fake_base, progress=False,
                 report=False)
    bigger = small_recipe(methods=["dpo"], settings=["id"], datasets=["mmlu-pro"], seeds=2)
    runner = Interrupting()
    run_protocol(bigger, out, run_fn=runner, base_fn=fake_base, progress=False, report=False)
    assert sorted(runner.calls) == ["mmlu-pro__id__dpo__cap-100pct__seed1",
                                    "mmlu-pro__id__dpo__cap-50pct__seed1"]
    changed = small_recipe(methods=["dpo"], settings=["id"], datasets=["mmlu-pro"], seeds=1)
    changed.train.beta = 0.5
    with pytest.raises(ValueError, match="different recipe"):
        run_protocol(changed, out, run_fn=Interrupting(), base_fn=fake_base, progress=False)
