"""Run the oracle grid: every selected cell run, resumed seed by seed, or skipped.

Before running a cell its ``results.json`` is read
(:func:`~auxdpo.harness.oracle.grid.cells.inspect_cell`): a done cell is skipped, a partial one runs
only its missing seeds and merges them with the seeds it has, and a different config is
refused unless ``force``. After every cell
``grid.md`` / ``grid.json`` are rewritten (:mod:`auxdpo.harness.oracle.grid.report`).
"""

from __future__ import annotations

import os

from auxdpo.harness.oracle.grid.cells import CellState, cell_config, inspect_cell, select_cells
from auxdpo.harness.oracle.grid.report import write_report

__all__ = ["run_grid"]


def _result(config, rows: list[dict], seconds: float) -> dict:
    """An oracle result dictionary (runner.run_oracle's shape) over ``rows``."""
    from dataclasses import asdict

    from auxdpo.harness.oracle.runner import aggregate

    summary = aggregate(rows)
    head = (config.capacities[0], config.betas[0])
    headline = {e["method"]: e["gap_closed"] for e in summary
                if (e["capacity"], e["beta"]) == head and e["method"] not in ("base", "rlhf")}
    return {"config": asdict(config), "rows": rows, "summary": summary,
            "gap_closed": headline, "seconds": seconds}


def _run_cell(state: CellState, config, out_dir: str, progress) -> int:
    """Run the seeds ``state`` lacks and write the merged outputs; returns seeds run."""
    from dataclasses import replace

    from auxdpo.harness.oracle import runner
    from auxdpo.harness.oracle.outputs import write_outputs

    k = state.done if state.state == "partial" else 0
    kept = [r for r in state.result["rows"] if r["seed"] < k] if k else []
    before = float(state.result.get("seconds", 0.0)) if k else 0.0
    merged = replace(config, first_seed=0)                  # config.seeds = N: covers all rows
    run_dir = os.path.dirname(state.path)

    def merge(partial: dict) -> dict:
        return _result(merged, kept + partial["rows"], before + partial["seconds"])

    result = runner.run_oracle(
        replace(config, first_seed=k, seeds=config.seeds - k), log=progress,
        on_partial=lambda partial: write_outputs(merge(partial), run_dir, plots=False))
    write_outputs(merge(result), run_dir)
    return config.seeds - k


def run_grid(out_dir: str, only: list[str] | None = None, seeds: int | None = None,
             encode_cache: str | None = None, log=lambda message: None, force: bool = False,
             progress=lambda message: None) -> list[dict]:
    """Run (or resume, or skip) every selected cell; returns ``[{"name", "action", "seeds"}]``.

    ``seeds`` overrides every cell's N; ``encode_cache`` is mmlu cells' ``mmlu.cache`` (default
    ``out_dir/mmlu-cache.pt``). A cell whose results.json has a different config is refused
    (ValueError naming every such file, before anything runs) unless ``force``. ``log`` gets
    one line per cell, ``progress`` the solvers' per-solve lines. grid.md / grid.json are
    rewritten after every cell.
    """
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    cache = encode_cache or os.path.join(out_dir, "mmlu-cache.pt")
    plan = []
    for name, fields in select_cells(only):
        config = cell_config(fields, seeds, cache)
        plan.append((inspect_cell(out_dir, name, config), config))
    refused = [s.reason for s, _ in plan if s.state == "different"]
    if refused and not force:
        raise ValueError("refusing to overwrite (use --force): " + "; ".join(refused))
    outcomes = []
    for state, config in plan:
        if state.state != "done":
            # Cells can take hours: look again, in case another process moved this one on.
            state = inspect_cell(out_dir, state.name, config)
            if state.state == "different" and not force:
                log(f"{state.name}: {state.reason}; skipped (use --force)")
                outcomes.append({"name": state.name, "action": "refused", "seeds": 0})
                write_report(out_dir, seeds, encode_cache)
                continue
        if state.state == "done":
            action, ran = "skipped", 0
            log(f"{state.name}: done ({state.done} seeds), skipped")
        else:
            action = "resumed" if state.state == "partial" else "ran"
            log(f"{state.name}: {state.label()}, running seeds "
                f"{state.done if action == 'resumed' else 0}..{config.seeds - 1}")
            ran = _run_cell(state, config, out_dir, progress)
            log(f"{state.name}: done")
        outcomes.append({"name": state.name, "action": action, "seeds": ran})
        write_report(out_dir, seeds, encode_cache)
    if not plan:
        write_report(out_dir, seeds, encode_cache)
    return outcomes
