"""Print the docs/results.md tables that pool `auxdpo oracle` runs.

Each argument is an `auxdpo oracle --out` folder. Runs whose configs differ only in which
seeds ran (the grid's rule, ``auxdpo.harness.oracle.grid.cells.relevant_fields``) are pooled, so a run done
in halves (``--first-seed``) gives one table row per (capacity, β). Each row has the gap closed
(mean ± std over seeds, ``runner.aggregate``), the worst seed of DPO and AuxDPO, the mean
reversal rates and, with ``--null-dim``, dim N(A_ρ) ∩ {per-state sums 0}. That dimension is
AuxDPO's own projector's, rebuilt at seed 0 (it costs one score matrix per capacity).

    python docs/tools/oracle_tables.py --null-dim runs/mmlu-questions/q{40,60,100,250}
    python docs/tools/oracle_tables.py --null-dim runs/tokens-small/s0 runs/tokens-small/s5
"""
import argparse
import json
import os
import re


def null_dim(config: dict, capacity_spec: str, seed: int = 0) -> int:
    """dim of AuxDPO's offset space for one run's task and capacity at ``seed``."""
    import torch

    from auxdpo.geometry import base_weights
    from auxdpo.harness.oracle.capacity import FlatCapacity
    from auxdpo.harness.oracle.cells import cell_setup
    from auxdpo.harness.oracle.mmlu import build_mmlu_task
    from auxdpo.harness.oracle.runner import OracleConfig
    from auxdpo.harness.oracle.solvers import NullProjector
    from auxdpo.harness.oracle.tasks import build_token_task

    torch.set_num_threads(1)
    cfg = OracleConfig(**json.loads(json.dumps(config)))
    if cfg.family == "mmlu-choice":
        task = build_mmlu_task(cfg.mmlu, seed)
        capacity = task.capacity(capacity_spec)
    else:
        task = build_token_task(cfg.task, seed)
        capacity = FlatCapacity(task.model, capacity_spec, seed=seed)
    cell = cell_setup(cfg, task, capacity, seed)
    S = task.num_prompts
    return NullProjector(cell["A"], base_weights(cell["rho"], cell["logp0"][:S]), S).null_dim


def main(argv=None) -> None:
    from auxdpo.harness.oracle.grid.cells import relevant_fields
    from auxdpo.harness.oracle.runner import aggregate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="auxdpo oracle --out folders")
    parser.add_argument("--null-dim", action="store_true", help="also rebuild dim N at seed 0")
    args = parser.parse_args(argv)

    pools: dict[str, dict] = {}                     # relevant config → its config and rows
    for run in args.runs:
        with open(os.path.join(run, "results.json")) as f:
            result = json.load(f)
        key = json.dumps(relevant_fields(result["config"]), sort_keys=True)
        pool = pools.setdefault(key, {"config": result["config"], "rows": []})
        pool["rows"] += result["rows"]

    def fmt(stat):
        return f"{stat['mean']:.3f} ± {stat['std']:.3f}"

    print("| capacity | d | S·A | dim N | β | seeds | rlhf_local | dpo | dpo worst | ipo | auxdpo "
          "| auxdpo worst | reversal: rlhf / dpo / auxdpo |")
    print("|---" * 13 + "|")
    for pool in pools.values():
        rows, summary = pool["rows"], aggregate(pool["rows"])
        stats = {(e["capacity"], e["beta"], e["method"]): e for e in summary}
        dims = {}
        for capacity, beta in dict.fromkeys((e["capacity"], e["beta"]) for e in summary):
            if capacity not in dims:
                dims[capacity] = null_dim(pool["config"], capacity) if args.null_dim else "–"
            one = next(r for r in rows if r["capacity"] == capacity)

            def worst(method):
                return min(r["gap_closed"] for r in rows if (r["capacity"], r["beta"],
                                                             r["method"]) == (capacity, beta,
                                                                              method))

            def get(method):
                return stats[capacity, beta, method]

            line = (f"| {capacity} | {one['dim']} | {one['responses']} | {dims[capacity]} "
                    f"| {beta:g} | {get('dpo')['seeds']} | {fmt(get('rlhf_local')['gap_closed'])} "
                    f"| {fmt(get('dpo')['gap_closed'])} | {worst('dpo'):.2f} "
                    f"| {fmt(get('ipo')['gap_closed'])} | {fmt(get('auxdpo')['gap_closed'])} "
                    f"| {worst('auxdpo'):.2f} | " + " / ".join(
                        f"{get(m)['reversal']['mean']:.2f}" for m in ("rlhf", "dpo", "auxdpo"))
                    + " |")
            print(re.sub(r"-(?=\d)", "−", line))


if __name__ == "__main__":
    main()
