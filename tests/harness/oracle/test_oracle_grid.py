"""``auxdpo oracle-grid``: cells, skip / resume / refuse, the report and ``--list``."""

import copy
import json
import shlex
from dataclasses import asdict

import pytest

from auxdpo.cli import build_parser, main
from auxdpo.harness.oracle import runner
from auxdpo.harness.oracle.cli import build_config
from auxdpo.harness.oracle.grid import cells as grid_cells
from auxdpo.harness.oracle.grid import report, run
from auxdpo.harness.oracle.grid.cli import cell_command
from auxdpo.harness.oracle.outputs import write_outputs

TINY = {"family": "tokens", "regime": "population", "design": "anti-aligned",
        "capacities": ["norm"], "betas": [50.0, 5.0], "seeds": 2, "max_iter": 60,
        "task": {"vocab_size": 3, "response_length": 2, "prompt_length": 2, "num_prompts": 3,
                 "num_heldout": 1, "hidden_size": 8, "num_layers": 1, "warmup_steps": 2}}
TINY_GRID = [("tiny-a", TINY), ("tiny-b", {**TINY, "design": "on-policy"})]


def _near(value):
    """A summary recomputed from its O(1) rows: a few hundred ulps (abs for a std of 0)."""
    return pytest.approx(value, rel=1e-13, abs=1e-13)


@pytest.fixture(scope="module")
def straight():
    """A straight 2-seed run of the tiny cell (the reference for every test)."""
    return runner.run_oracle(grid_cells.cell_config(TINY))


@pytest.fixture
def tiny_grid(monkeypatch):
    monkeypatch.setattr(grid_cells, "GRID", TINY_GRID)


@pytest.fixture
def fake_runs(monkeypatch, straight):
    """run_oracle replaced by the straight run's rows for the asked seeds; records the calls."""
    calls = []

    def fake(config, log=None, on_partial=None):
        calls.append((config.design, config.first_seed, config.seeds))
        seeds = range(config.first_seed, config.first_seed + config.seeds)
        result = run._result(config, [r for r in straight["rows"] if r["seed"] in seeds], 1.0)
        if on_partial is not None:
            on_partial(result)
        return result

    monkeypatch.setattr(runner, "run_oracle", fake)
    return calls


def _write(result, directory, **config_changes):
    result = copy.deepcopy(result)
    result["config"].update(config_changes)
    write_outputs(result, str(directory), plots=False)


def _read(path):
    return json.loads(path.read_text())


def test_grid_holds_exactly_the_documented_cells():
    names = [name for name, _ in grid_cells.GRID]
    designs = ["anti-aligned", "on-policy", "uniform", "skew"]
    assert names == (
        [f"tokens-population-{d}-norm" for d in designs]
        + [f"mmlu-choice-population-{d}-head" for d in designs]
        + ["mmlu-choice-population-anti-aligned-head-graded"]
        + [f"tokens-population-{d}-lora{r}" for r in (1, 4) for d in designs[:2]]
        + [f"tokens-finite-{d}-norm" for d in designs[:2]])
    configs = dict(grid_cells.GRID)
    for name, fields in grid_cells.GRID:
        config = grid_cells.cell_config(fields)
        assert (config.seeds, config.methods, config.betas) == (
            10, ["dpo", "ipo", "dpop", "auxdpo"], [100.0, 10.0, 1.0]), name
    lora = grid_cells.cell_config(configs["tokens-population-on-policy-lora4"])
    assert (lora.capacities, lora.max_iter, lora.restarts, lora.precondition_floor,
            lora.restart_floor) == (["lora:4"], 100, 4, 1e-3, 1e-6)
    graded = grid_cells.cell_config(configs["mmlu-choice-population-anti-aligned-head-graded"])
    assert (graded.mmlu.reward, graded.max_iter, graded.capacities) == ("graded", 1000,
                                                                        ["head"])
    finite = grid_cells.cell_config(configs["tokens-finite-on-policy-norm"])
    assert (finite.regime, finite.finite.pairs, finite.aux_modes, finite.max_iter) == (
        "finite", 1000, ["projection", "global", "batch"], 300)
    norm = grid_cells.cell_config(configs["tokens-population-skew-norm"])
    assert (norm.max_iter, norm.precondition_floor, norm.aux_modes) == (150, 1e-9,
                                                                        ["projection"])


def _cli_config(command: str):
    args = build_parser().parse_args(shlex.split(command)[1:])
    return build_config(args)


@pytest.mark.parametrize("name, command", [
    ("tokens-population-on-policy-norm",
     "auxdpo oracle --design on-policy --capacity norm --beta 100 10 1 --seeds 10 "
     "--max-iter 150 --out runs/grid/x"),
    ("mmlu-choice-population-skew-head",
     "auxdpo oracle --family mmlu-choice --design skew --beta 100 10 1 --seeds 4 --first-seed 3"
     " --max-iter 1000 --encode-cache elsewhere.pt --out runs/grid/y"),
])
def test_plain_cli_runs_match_their_cell(name, command):
    cell = grid_cells.cell_config(dict(grid_cells.GRID)[name])
    stored = asdict(_cli_config(command))
    assert grid_cells.config_differences(stored, cell) == []  # seeds, first_seed, cache ignored
    stored["max_iter"] = 151
    stored["task"]["hidden_size"] = 7                     # tokens: a field the task reads
    expected = ["max_iter"] + (["task.hidden_size"] if name.startswith("tokens") else [])
    assert grid_cells.config_differences(stored, cell) == expected


def test_every_listed_command_rebuilds_its_cell_config():
    for name, fields in grid_cells.GRID:
        command = cell_command(name, fields, "out dir", seeds=3, encode_cache="c.pt")
        assert command.endswith("--out " + shlex.quote(f"out dir/{name}"))
        assert asdict(_cli_config(command)) == asdict(grid_cells.cell_config(fields, 3, "c.pt"))


def test_complete_cell_is_skipped(tmp_path, tiny_grid, fake_runs, straight):
    _write(straight, tmp_path / "tiny-a", threads=2)         # threads is ignored
    outcomes = run.run_grid(str(tmp_path), only=["tiny-a"])
    assert fake_runs == [] and outcomes == [{"name": "tiny-a", "action": "skipped", "seeds": 0}]
    outcomes = run.run_grid(str(tmp_path))
    assert fake_runs == [("on-policy", 0, 2)]
    assert [o["action"] for o in outcomes] == ["skipped", "ran"]
    assert _read(tmp_path / "tiny-a" / "results.json")["config"]["threads"] == 2  # untouched


def test_partial_cell_resumes_missing_seed_and_matches_straight_run(
        tmp_path, tiny_grid, monkeypatch, straight):
    """Seed 0 complete, seed 1 cut off mid-way → only seed 1 runs; rows equal a 2-seed run."""
    partial = copy.deepcopy(straight)
    partial["rows"] = [r for r in partial["rows"] if r["seed"] == 0] + [
        r for r in partial["rows"] if r["seed"] == 1][:3]
    _write(partial, tmp_path / "tiny-a")
    config = grid_cells.cell_config(TINY)
    assert grid_cells.inspect_cell(str(tmp_path), "tiny-a", config).label() == \
        "partial 1 of 2 seeds"
    calls, real = [], runner.run_oracle

    def recording(config, **kwargs):
        calls.append((config.first_seed, config.seeds))
        return real(config, **kwargs)

    monkeypatch.setattr(runner, "run_oracle", recording)
    run.run_grid(str(tmp_path), only=["tiny-a"])
    assert calls == [(1, 1)]
    merged = _read(tmp_path / "tiny-a" / "results.json")
    assert (merged["config"]["first_seed"], merged["config"]["seeds"]) == (0, 2)
    assert len(merged["rows"]) == len(straight["rows"]) == 2 * 2 * 7
    assert merged["rows"][:14] == straight["rows"][:14]     # seed 0 kept as it was, bit for bit
    # The resumed seed is computed afresh: the oracle is bit-reproducible (its solvers use the
    # deterministic gelsd least-squares driver), so the merged rows equal the straight run's.
    assert merged["rows"] == straight["rows"]
    assert merged["summary"] == straight["summary"]


def test_cheaper_pass_then_larger_n_resumes(tmp_path, tiny_grid, fake_runs):
    run.run_grid(str(tmp_path), only=["tiny-a"], seeds=1)
    assert fake_runs == [("anti-aligned", 0, 1)]
    report = _read(tmp_path / "grid.json")["cells"]
    assert [c["status"] for c in report] == ["done", "not run"]          # against N = 1
    run.run_grid(str(tmp_path), only=["tiny-a"])
    assert fake_runs[1:] == [("anti-aligned", 1, 1)]
    assert _read(tmp_path / "grid.json")["cells"][0]["status"] == "done"


def test_different_config_is_refused_naming_the_file(tmp_path, tiny_grid, fake_runs,
                                                     straight, capsys):
    _write(straight, tmp_path / "tiny-a", max_iter=61)
    path = str(tmp_path / "tiny-a" / "results.json")
    with pytest.raises(ValueError, match=r"tiny-a/results\.json.*max_iter"):
        run.run_grid(str(tmp_path))
    assert fake_runs == []                                 # refused before anything ran
    assert main(["oracle-grid", "--out", str(tmp_path), "--quiet"]) == 2
    assert path in capsys.readouterr().err
    run.run_grid(str(tmp_path), only=["tiny-a"], force=True)
    assert fake_runs == [("anti-aligned", 0, 2)]
    assert _read(tmp_path / "tiny-a" / "results.json")["config"]["max_iter"] == 60


def test_seeds_not_starting_at_zero_are_not_overwritten(tmp_path, tiny_grid, straight):
    later = copy.deepcopy(straight)
    later["rows"] = [r for r in later["rows"] if r["seed"] == 1]
    _write(later, tmp_path / "tiny-a", first_seed=1, seeds=1)
    state = grid_cells.inspect_cell(str(tmp_path), "tiny-a", grid_cells.cell_config(TINY))
    assert state.state == "different" and "seed 0" in state.reason


def test_report_numbers_equal_the_cells_summaries(tmp_path, tiny_grid, straight):
    _write(straight, tmp_path / "tiny-a")
    seed0 = copy.deepcopy(straight)
    seed0["rows"] = [r for r in seed0["rows"] if r["seed"] == 0]
    _write(seed0, tmp_path / "tiny-b", design="on-policy")
    report.write_report(str(tmp_path))
    cells = _read(tmp_path / "grid.json")["cells"]
    assert [c["status"] for c in cells] == ["done", "partial 1 of 2 seeds"]
    text = (tmp_path / "grid.md").read_text()
    assert "| tiny-a | done |" in text and "| tiny-b | partial 1 of 2 seeds |" in text
    summary = {(e["beta"], e["method"]): e["gap_closed"] for e in straight["summary"]}
    entries = cells[0]["gap_closed"]
    assert [e["beta"] for e in entries] == [50.0, 5.0]
    for entry in entries:
        assert set(entry["methods"]) == {"rlhf_local", "dpo", "ipo", "dpop", "auxdpo"}
        for method, stat in entry["methods"].items():
            assert stat == summary[entry["beta"], method]
            assert f"{stat['mean']:.3f} ± {stat['std']:.3f}" in text
    # The partial cell reports seed 0 alone: its std over one seed is 0.
    assert all(e["seeds"] == 1 and e["methods"]["dpo"]["std"] == 0.0
               for e in cells[1]["gap_closed"])
    dpo0 = next(r for r in seed0["rows"] if (r["beta"], r["method"]) == (50.0, "dpo"))
    assert cells[1]["gap_closed"][0]["methods"]["dpo"]["mean"] == _near(dpo0["gap_closed"])
    # The detail rows: worst and best seed, J's gain over θ₀ and the metrics' means, from rows.
    rows = straight["rows"]
    for entry in cells[0]["details"]:
        mine = [r for r in rows if (r["beta"], r["method"]) == (entry["beta"], entry["method"])]
        base = {r["seed"]: r["J"] for r in rows
                if (r["beta"], r["method"]) == (entry["beta"], "base")}
        gaps = [r["gap_closed"] for r in mine]
        assert entry["seeds"] == 2 and (entry["gap_min"], entry["gap_max"]) == (min(gaps),
                                                                               max(gaps))
        gains = [r["J"] - base[r["seed"]] for r in mine]
        assert entry["gain"]["mean"] == _near(sum(gains) / 2)
        assert entry["gain"]["std"] == _near(abs(gains[0] - gains[1]) / 2)
        assert entry["above_rlhf"] == sum(g > 1 + 1e-9 for g in gaps)
        want = summary_of(straight, entry, "reversal")
        assert entry["reversal"]["mean"] == _near(want["mean"])
        assert entry["reversal"]["std"] == _near(want["std"])
        if entry["method"] == "base":
            assert entry["gain"] == {"mean": 0.0, "std": 0.0} and entry["gap_max"] == 0.0
    assert {e["method"] for e in cells[0]["details"]} == {
        "base", "rlhf", "rlhf_local", "dpo", "ipo", "dpop", "auxdpo"}
    assert "| 50 | dpo | 2 |" in text and "| 5 | rlhf | 2 |" in text


def summary_of(result: dict, entry: dict, metric: str) -> dict:
    """The cell's own summary entry for the detail row's (capacity, β, method)."""
    return next(e[metric] for e in result["summary"] if (e["capacity"], e["beta"], e["method"])
                == (entry["capacity"], entry["beta"], entry["method"]))


def test_cli_list_and_report(tmp_path, tiny_grid, straight, capsys):
    _write(straight, tmp_path / "tiny-a")
    assert main(["oracle-grid", "--out", str(tmp_path), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "tiny-a: done" and lines[2] == "tiny-b: not run"
    assert lines[3].strip().startswith("auxdpo oracle --family tokens --regime population "
                                       "--design on-policy --capacity norm --beta 50 5 "
                                       "--seeds 2 --max-iter 60 --vocab-size 3")
    assert not (tmp_path / "grid.md").exists()              # --list writes nothing
    assert main(["oracle-grid", "--out", str(tmp_path), "--only", "tiny-b", "--list",
                 "--seeds", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "tiny-b: not run"
    assert main(["oracle-grid", "--out", str(tmp_path), "--report"]) == 0
    assert "| tiny-a | done |" in (tmp_path / "grid.md").read_text()
    assert main(["oracle-grid", "--out", str(tmp_path), "--only", "nope*", "--list"]) == 2
    assert "nope*" in capsys.readouterr().err


def test_status_is_checked_again_before_each_cell(tmp_path, tiny_grid, fake_runs, straight,
                                                  monkeypatch):
    """A cell finished by another process while an earlier cell ran is skipped, not rerun."""
    real = runner.run_oracle

    def finishing_b_meanwhile(config, **kwargs):
        _write(straight, tmp_path / "tiny-b", design="on-policy")   # the other process
        return real(config, **kwargs)

    monkeypatch.setattr(runner, "run_oracle", finishing_b_meanwhile)
    outcomes = run.run_grid(str(tmp_path))
    assert fake_runs == [("anti-aligned", 0, 2)]                     # tiny-b never ran
    assert [o["action"] for o in outcomes] == ["ran", "skipped"]


def test_capacity_plot_joins_cells_that_differ_only_in_capacity(tmp_path, monkeypatch,
                                                                straight):
    wide = {**TINY, "capacities": ["lora:1"]}
    monkeypatch.setattr(grid_cells, "GRID", [*TINY_GRID, ("tiny-c", wide)])
    _write(straight, tmp_path / "tiny-a")
    report.write_report(str(tmp_path))
    assert not (tmp_path / "gap_vs_capacity.png").exists()       # one capacity per task
    other = copy.deepcopy(straight)
    for row in other["rows"]:
        row["capacity"], row["gap_closed"] = "lora:1", row["gap_closed"] / 2
    _write(other, tmp_path / "tiny-c", capacities=["lora:1"])
    assert str(tmp_path / "gap_vs_capacity.png") in report.write_report(str(tmp_path))
    assert (tmp_path / "gap_vs_capacity.png").read_bytes()[:4] == b"\x89PNG"
    cells = {c["name"]: c["gap_closed"] for c in _read(tmp_path / "grid.json")["cells"]}
    drawn = report.plot_capacity({"t": cells["tiny-a"] + cells["tiny-c"], "u": cells["tiny-a"]},
                                 str(tmp_path / "again.png"))
    assert {key[0] for key in drawn} == {"t"}                     # u has one capacity: no row
    assert {key[2] for key in drawn} == {"dpo", "ipo", "auxdpo"}  # rlhf_local, dpop left out
    for beta in (50.0, 5.0):
        a, c = (next(e for e in cells[n] if e["beta"] == beta)["methods"]["dpo"]
                for n in ("tiny-a", "tiny-c"))
        assert drawn["t", beta, "dpo"] == [("norm", a["mean"], a["std"]),
                                           ("lora:1", c["mean"], c["std"])]
        assert c["mean"] == _near(a["mean"] / 2)
    assert report.plot_capacity({"u": cells["tiny-a"]}, str(tmp_path / "none.png")) is None
    assert not (tmp_path / "none.png").exists()


def test_grid_report_says_when_the_capacity_figure_is_skipped(tmp_path, capsys):
    paths = report.write_report(str(tmp_path))  # nothing run yet: no cell to draw
    assert not any(p.endswith("gap_vs_capacity.png") for p in paths)
    assert capsys.readouterr().err == ("gap_vs_capacity.png: skipped (no task has finished "
                                       "cells at two or more capacities yet)\n")


def test_quick_presets_give_every_solve_room_to_converge():
    """The quick presets' iteration budgets cover the slowest measured AuxDPO solve (tokens:
    282 iterations; mmlu-choice head: 2650), so their headline rows are not cap-limited;
    an explicit --max-iter still wins."""
    import argparse

    from auxdpo.harness.oracle import cli as oracle_cli

    def config(*argv):
        parser = argparse.ArgumentParser()
        oracle_cli.register(parser.add_subparsers())
        return oracle_cli.build_config(parser.parse_args(["oracle", *argv]))

    assert config("--preset", "quick").max_iter == 400
    assert config("--preset", "quick", "--family", "mmlu-choice").max_iter == 3000
    assert config("--preset", "quick", "--family", "mmlu-choice",
                  "--max-iter", "50").max_iter == 50
