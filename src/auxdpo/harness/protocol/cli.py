"""``auxdpo protocol``: run the paper's evaluation protocol from a recipe, resumably.

    auxdpo protocol run --recipe FILE.yaml --out DIR     # or --preset smoke
    auxdpo protocol run --preset smoke --out DIR --dry-run   # list the grid, run nothing
    auxdpo protocol report --out DIR                     # rebuild tables/figures from results
    auxdpo protocol check --recipe FILE.yaml             # validate it, load nothing, run nothing

Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["register"]

PRESETS = ("smoke",)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "protocol", help="run the paper's protocol (methods × settings × data × capacity × seeds)",
        description="Train and evaluate every run of a recipe's grid (resumable: finished runs "
                    "are skipped), then write Table 1, Table 2, the accuracy-vs-capacity "
                    "figure and CSV/JSON data. See docs/protocol.md.")
    actions = parser.add_subparsers(dest="protocol_action", metavar="ACTION")
    run = actions.add_parser("run", help="run (or resume) a recipe")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="YAML recipe file (examples/protocol/*.yaml)")
    source.add_argument("--preset", choices=PRESETS, help="built-in recipe: smoke = tiny model, "
                        "a few hundred real rows, synthetic RewardBench 2, minutes on a CPU")
    run.add_argument("--out", required=True, help="output folder (resumes when it exists)")
    run.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; the "
                     "smoke preset uses 1, which avoids OpenMP spinning on busy machines)")
    run.set_defaults(func=_handle_run)
    check = actions.add_parser(
        "check", help="validate a recipe against the installed TRL/transformers: every "
                      "method and capacity's trainer config is built; no model or data is "
                      "loaded; one line, exit 0 (OK) or 2 (the error)")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="YAML recipe file (examples/protocol/*.yaml)")
    source.add_argument("--preset", choices=PRESETS, help="built-in recipe")
    check.set_defaults(func=_handle_check)
    report = actions.add_parser("report", help="rebuild tables and figures of an output folder")
    report.add_argument("--out", required=True, help="output folder of `protocol run`")
    report.set_defaults(func=_handle_report)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _recipe(args):
    from auxdpo.harness.protocol.recipe import load_recipe, recipe_from_dict

    if args.recipe:
        return load_recipe(args.recipe)
    from auxdpo.harness.protocol.smoke import smoke_data_missing, smoke_recipe_dict

    values = smoke_recipe_dict()
    missing = smoke_data_missing(values)
    if missing:
        raise FileNotFoundError("the smoke preset reads real rows from the folder named by "
                                "AUXDPO_DATA_DIR; missing: " + ", ".join(missing))
    return recipe_from_dict(values)


def _handle_run(args) -> int:
    from auxdpo.harness.protocol.recipe import expand_grid
    from auxdpo.harness.protocol.runner import run_protocol
    from auxdpo.harness.protocol.store import read_result, result_path
    from auxdpo.progress import is_main_process

    recipe = _recipe(args)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file, not a folder")
    runs = expand_grid(recipe)
    if args.dry_run:
        done = sum(read_result(result_path(args.out, run)) is not None for run in runs)
        print(f"recipe: {recipe.name}  runs: {len(runs)}  finished: {done}  "
              f"table capacity: {recipe.table_capacity}")
        for run in runs:
            print(f"  {run.run_id}  preset={run.preset}")
        return 0
    threads = args.threads or (1 if args.preset == "smoke" else None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from auxdpo.locks import output_folder

    with output_folder(args.out, "auxdpo protocol run"):
        progress = run_protocol(recipe, args.out, progress=not args.no_progress)
    if not is_main_process():
        return 0  # one summary per launch, from rank 0
    print(f"recipe: {recipe.name}  runs: {progress.total} (ran {progress.ran}, skipped "
          f"{progress.skipped}) in {progress.seconds:.1f} s")
    _print_outputs(args.out)
    return 0


def _handle_check(args) -> int:
    from importlib.metadata import version

    from auxdpo.harness.protocol.recipe import expand_grid
    from auxdpo.harness.protocol.tasks import is_missing_local
    from auxdpo.harness.protocol.training import check_training_configs

    recipe = _recipe(args)
    runs = expand_grid(recipe)
    where = args.recipe or f"preset {args.preset}"
    try:
        check_training_configs(recipe, runs, "work")  # output_dir names only: none is made
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    data = recipe.data
    sources = {"mmlu-pro": ("mmlu_pro", data.mmlu_pro),
               "rewardbench2": ("rewardbench2", data.rewardbench2)}
    used = [sources[name] for name in recipe.grid.datasets]
    if "ood" in recipe.grid.settings:
        used.append(("ultrafeedback", data.ultrafeedback))
    missing = [f"data.{key} {source}" for key, source in used if is_missing_local(source)]
    grid = recipe.grid
    print(f"{where}: OK: recipe {recipe.name}, {len(runs)} runs, methods {'/'.join(grid.methods)}, "
          f"capacities {'/'.join(grid.capacities)}, model {recipe.model.name_or_path}, data "
          + ", ".join(f"{key} {source}" for key, source in used)
          + f"; transformers {version('transformers')}, trl {version('trl')}"
          + (f"; not found here: {', '.join(missing)}" if missing else ""))
    return 0


def _handle_report(args) -> int:
    from auxdpo.harness.protocol.recipe import recipe_from_dict
    from auxdpo.harness.protocol.results import write_report

    path = os.path.join(args.out, "recipe.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (is {args.out} a `protocol run` folder?)")
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a protocol recipe file ({exc})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("recipe"), dict):
        raise ValueError(f"{path} holds no protocol recipe (is {args.out} a `protocol run` "
                         "folder?)")
    recipe = recipe_from_dict(stored["recipe"])
    from auxdpo.locks import output_folder

    with output_folder(args.out, "auxdpo protocol report"):
        write_report(recipe, args.out)
    _print_outputs(args.out)
    return 0


def _print_outputs(out_dir: str) -> None:
    table = os.path.join(out_dir, "tables", "table1.md")
    if os.path.isfile(table):
        with open(table, encoding="utf-8") as handle:
            sys.stdout.write("\nTable 1 (held-out pairwise log-prob accuracy)\n\n" + handle.read())
    for sub in ("tables", "figures"):
        folder = os.path.join(out_dir, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if not name.startswith("."):
                print(f"{sub[:-1]}: {os.path.join(folder, name)}")
    print(f"data: {os.path.join(out_dir, 'runs.csv')} {os.path.join(out_dir, 'summary.csv')} "
          f"{os.path.join(out_dir, 'summary.json')}")
