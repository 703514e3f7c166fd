"""What `auxdpo diagnose` costs against one DPO epoch on the same model, capacity and data.

    .venv/bin/python benchmarks/bench_diagnose.py [--models tiny,small] [--pairs 120]
        [--capacities lora:4,full] [--bootstrap 20]

CPU seconds (process time, one thread) of the diagnostic (scores, reward fit, local model,
bootstrap, the check along the RLHF step) and of `auxdpo train` with `method: dpo` for one epoch
(batch 8), and their ratio; one line per model and capacity. Data: the synthetic
multi-comparison rows of the demo (every pair of four answers per question).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

MODELS = {"tiny": (2, 32), "small": (4, 128)}   # gpt2: layers, hidden size


def recipe(folder: Path, model: str, capacity: str, pairs: int) -> dict:
    from auxdpo.train.demo import demo_rows

    rows, _ = demo_rows(pairs, path=None)
    data = folder / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    layers, hidden = MODELS[model]
    return {"model_name_or_path": "tiny-gpt2", "tiny_num_layers": layers,
            "tiny_hidden_size": hidden, "dataset_name": str(data), "capacity": capacity,
            "method": "dpo", "beta": 1.0, "num_train_epochs": 1,
            "per_device_train_batch_size": 8, "learning_rate": 1e-3, "max_length": 128,
            "report_to": [], "save_strategy": "no", "use_cpu": True, "bf16": False,
            "gradient_checkpointing": False, "disable_tqdm": True, "logging_steps": 1000,
            "output_dir": str(folder / "run"), "metrics_file": None}


def measure(model: str, capacity: str, pairs: int, bootstrap: int) -> dict:
    from auxdpo.diagnose.run import diagnose
    from auxdpo.train.run import resolve_config, run_training

    with tempfile.TemporaryDirectory() as tmp:
        values = recipe(Path(tmp), model, capacity, pairs)
        run_args, config = resolve_config(dict(values))
        start = time.process_time()
        report = diagnose(run_args, config, max_pairs=None, bootstrap=bootstrap,
                          show_progress=False)
        diagnose_s = time.process_time() - start
        run_args, config = resolve_config(dict(values))
        start = time.process_time()
        run_training(run_args, config)
        epoch_s = time.process_time() - start
    return {"model": model, "capacity": capacity, "pairs": report["pairs"],
            "responses": report["unique_responses"], "parameters": report["parameters"],
            "diagnose_s": round(diagnose_s, 2), "dpo_epoch_s": round(epoch_s, 2),
            "ratio": round(diagnose_s / epoch_s, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--capacities", default="lora:4,full")
    parser.add_argument("--pairs", type=int, default=120)
    parser.add_argument("--bootstrap", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | capacity | pairs | responses | parameters | diagnose (CPU s) | "
          "DPO epoch (CPU s) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for capacity in args.capacities.split(","):
            row = measure(model, capacity, args.pairs, args.bootstrap)
            print(f"| {row['model']} | {row['capacity']} | {row['pairs']} | "
                  f"{row['responses']} | {row['parameters']} | {row['diagnose_s']} | "
                  f"{row['dpo_epoch_s']} | {row['ratio']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
