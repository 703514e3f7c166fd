"""``auxdpo train --config FILE.yaml [--key value ...]``: DPO/IPO/DPOP/AuxDPO on a causal LM.

The YAML file is flat and TRL-style: keys of ``RunArguments`` (model_name_or_path,
dataset_name, ...) and of ``AuxDPOConfig`` (method, capacity, beta, learning_rate, ...).
``--key value`` pairs after it override single keys (values read as YAML scalars).
``--check`` validates the recipe against the installed TRL/transformers and exits (0 and a
one-line summary, or 2 and the error) without loading the model or the data
(:mod:`auxdpo.train.recipe_check`). Heavy imports (torch, transformers, trl) happen inside the
handler.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["OverridesParser", "register"]


class OverridesParser(argparse.ArgumentParser):
    """Keeps unknown ``--key value`` tokens as ``namespace.overrides`` instead of failing."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        namespace.overrides = list(getattr(namespace, "overrides", None) or []) + list(rest)
        return namespace, []


class TrainParser(OverridesParser):
    """``auxdpo train``'s parser: its help lists every config key."""

    def format_help(self) -> str:
        from auxdpo.train.keys_help import config_keys_help

        return super().format_help() + "\nconfig keys (YAML or --key value):\n\n" + \
            config_keys_help() + "\n"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a causal LM with dpo, ipo, dpop or auxdpo (TRL drop-in)",
        description="Train with AuxDPOTrainer. Keys: RunArguments (model_name_or_path, "
                    "dataset_name, dataset_split, ...) and AuxDPOConfig (method, capacity, "
                    "aux_constraint, lambda_null, delta_lr, beta, output_dir, ...); see "
                    "docs/trainer.md. Example: auxdpo train --config "
                    "examples/tiny_auxdpo.yaml --method dpo --max_steps 4")
    parser.__class__ = TrainParser
    parser.add_argument("--config", help="flat YAML file of run and training keys")
    parser.add_argument("--check", action="store_true",
                        help="validate the config (keys, values, the installed TRL and "
                             "transformers) without loading the model or the data, print one "
                             "line and exit (0: OK, 2: the error)")
    parser.set_defaults(func=_handle, overrides=[])


def _handle(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from auxdpo.train.recipe_check import check_recipe, resolve_recipe

    if args.check:
        print(check_recipe(args.config, args.overrides))
        return 0
    run_args, config = resolve_recipe(args.config, args.overrides)
    from auxdpo.train.run import run_training

    result = run_training(run_args, config)
    if not result["main_process"]:  # under accelerate/torchrun: rank 0 prints the summary
        return 0
    final = result["final"]           # the metrics' mean over the processes
    print(f"run: {result['output_dir']}")
    print(f"method: {config.method}  capacity: {config.capacity}  steps: {result['steps']}")
    print("final: " + json.dumps({k: round(v, 6) for k, v in final.items()}, sort_keys=True))
    print(f"config: {result['config']}")
    if result["metrics_file"]:
        print(f"metrics: {result['metrics_file']}")
    return 0
