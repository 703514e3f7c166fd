"""The oracle grid's cells, and where each stands in an output folder.

A cell is one ``auxdpo oracle`` run (an :class:`~auxdpo.harness.oracle.runner.OracleConfig`) whose
outputs live in ``<out>/<cell name>/``. :data:`GRID` lists the cells, cheap to expensive;
:func:`inspect_cell` reads a cell's ``results.json``: a cell whose config matches and whose
seeds are all complete is done, one whose first k seeds are complete is partial, and a file
from a different config is "different" (:func:`config_differences` names the fields). See
docs/oracle.md, "The full grid".

No heavy imports at module top (``auxdpo --help`` stays fast).
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass

__all__ = ["GRID", "CellState", "cell_config", "complete_seeds", "config_differences",
           "expected_methods", "inspect_cell", "relevant_fields", "select_cells"]

_BETAS = [100.0, 10.0, 1.0]
_DESIGNS = ("anti-aligned", "on-policy", "uniform", "skew")


def _cell(**fields) -> dict:
    """A cell's fields; ``methods`` is left to OracleConfig's default, every paper method
    (:data:`auxdpo.losses.PAPER_METHODS`)."""
    return {"seeds": 10, "betas": list(_BETAS), **fields}


# Ordered cheap → expensive. Names are directory names under --out.
GRID: list[tuple[str, dict]] = [
    *[(f"tokens-population-{d}-norm",
       _cell(family="tokens", regime="population", design=d, capacities=["norm"],
             max_iter=150, aux_modes=["projection"])) for d in _DESIGNS],
    *[(f"mmlu-choice-population-{d}-head",
       _cell(family="mmlu-choice", regime="population", design=d, capacities=["head"],
             max_iter=1000, mmlu={"reward": "binary"})) for d in _DESIGNS],
    ("mmlu-choice-population-anti-aligned-head-graded",
     _cell(family="mmlu-choice", regime="population", design="anti-aligned",
           capacities=["head"], max_iter=1000, mmlu={"reward": "graded"})),
    *[(f"tokens-population-{d}-lora{r}",
       _cell(family="tokens", regime="population", design=d, capacities=[f"lora:{r}"],
             max_iter=100, restarts=4, precondition_floor=1e-3, restart_floor=1e-6))
      for r in (1, 4) for d in ("anti-aligned", "on-policy")],
    *[(f"tokens-finite-{d}-norm",
       _cell(family="tokens", regime="finite", design=d, capacities=["norm"],
             aux_modes=["projection", "global", "batch"], finite={"pairs": 1000}))
      for d in ("anti-aligned", "on-policy")],
]

# Fields that do not change a cell's rows (or only say which seeds ran): never compared.
_IGNORED = {"threads", "first_seed", "seeds"}


def cell_config(fields: dict, seeds: int | None = None, encode_cache: str | None = None):
    """The OracleConfig of a grid cell, with ``seeds`` and ``mmlu.cache`` overridden."""
    from auxdpo.harness.oracle.runner import OracleConfig

    fields = {**fields, **({"seeds": seeds} if seeds is not None else {})}
    if encode_cache is not None and fields.get("family") == "mmlu-choice":
        fields["mmlu"] = {**fields.get("mmlu", {}), "cache": encode_cache}
    return OracleConfig(**json.loads(json.dumps(fields)))        # nested dicts copied


def relevant_fields(config: dict) -> dict:
    """The fields that decide a cell's rows; sections its family/regime never reads dropped."""
    out = {k: v for k, v in config.items() if k not in _IGNORED}
    if config["family"] != "tokens":
        out.pop("task")
    if config["family"] != "mmlu-choice":
        out.pop("mmlu")
    else:
        out["mmlu"] = {k: v for k, v in config["mmlu"].items() if k != "cache"}
        out["mmlu"]["data"] = os.path.realpath(out["mmlu"]["data"])
    if config["regime"] != "finite":
        out.pop("finite")
    return out


def config_differences(stored: dict, config) -> list[str]:
    """Names of the fields (``mmlu.reward`` style) where a saved config differs from ``config``.

    ``stored`` is first rebuilt as an OracleConfig, so fields added since it was written take
    their defaults; ``threads``, ``first_seed``, ``seeds``, ``mmlu.cache`` and the sections a
    cell's family and regime never read are not compared.
    """
    from dataclasses import asdict

    from auxdpo.harness.oracle.runner import OracleConfig

    try:
        rebuilt = asdict(OracleConfig(**stored))
    except (TypeError, ValueError) as exc:
        return [f"<not a valid OracleConfig: {exc}>"]
    ours, theirs = relevant_fields(asdict(config)), relevant_fields(rebuilt)
    diff = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diff.append(key)
    return diff


def expected_methods(config) -> list[str]:
    """Row names every (seed, capacity, β) of a complete run holds."""
    from auxdpo.harness.oracle.cells import method_names

    names = ["base", "rlhf", "rlhf_local"] + [n for n, _, _ in method_names(config)]
    if config.regime == "finite" and config.finite.rm_steps > 0:
        names.append("rlhf_2stage")
    return names


def complete_seeds(rows: list[dict], config) -> set[int]:
    """Seeds with a row for every capacity × β × expected method."""
    need = {(c, float(b), m) for c in config.capacities for b in config.betas
            for m in expected_methods(config)}
    have: dict[int, set] = {}
    for row in rows:
        have.setdefault(row["seed"], set()).add((row["capacity"], float(row["beta"]),
                                                 row["method"]))
    return {seed for seed, keys in have.items() if need <= keys}


@dataclass
class CellState:
    """What ``<out>/<name>/results.json`` holds for one grid cell."""

    name: str
    path: str                   # the cell's results.json
    state: str                  # "not run", "partial", "done" or "different"
    done: int                   # k: seeds 0..k-1 are complete
    seeds: int                  # N wanted
    reason: str = ""            # why "different"
    result: dict | None = None  # the file's contents (None when absent)

    def label(self) -> str:
        if self.state == "partial":
            return f"partial {self.done} of {self.seeds} seeds"
        if self.state == "done":
            return f"done ({self.done} seeds)" if self.done != self.seeds else "done"
        return "different config" if self.state == "different" else self.state


def inspect_cell(out_dir: str, name: str, config) -> CellState:
    """Status of one cell in ``out_dir`` against ``config`` (which carries N = config.seeds)."""
    path = os.path.join(out_dir, name, "results.json")
    state = CellState(name, path, "not run", 0, config.seeds)
    if not os.path.exists(path):
        return state
    try:
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        stored, rows = result["config"], result["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        state.state, state.reason = "different", f"{path}: not an oracle results file ({exc})"
        return state
    diff = config_differences(stored, config)
    if diff:
        state.state = "different"
        state.reason = f"{path}: config differs from grid cell {name} in {', '.join(diff)}"
        return state
    complete = complete_seeds(rows, config)
    k = 0
    while k in complete:
        k += 1
    state.result, state.done = result, k
    if k >= config.seeds:
        state.state = "done"
    elif k > 0:
        state.state = "partial"
    elif complete:     # complete seeds, but not from 0: overwriting them would lose work
        state.state = "different"
        state.reason = (f"{path}: holds complete seeds {sorted(complete)} but not seed 0 "
                        f"(a --first-seed run)")
    return state


def select_cells(only: list[str] | None = None) -> list[tuple[str, dict]]:
    """GRID's cells whose names match any of ``only`` (names or globs), in GRID order."""
    if not only:
        return list(GRID)
    names = [name for name, _ in GRID]
    unknown = [p for p in only if not fnmatch.filter(names, p)]
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)} matches no grid cell; cells: "
                         f"{', '.join(names)}")
    return [(n, f) for n, f in GRID if any(fnmatch.fnmatchcase(n, p) for p in only)]
