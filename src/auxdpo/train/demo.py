"""A tiny end-to-end AuxDPO run (seconds on a CPU) for ``make demo``.

The model is a random 2-layer GPT-2 with the offline character tokenizer; the data are the
first rows of ``$AUXDPO_DATA_DIR/ultrafeedback/train_1k.jsonl`` (texts cut to a few dozen
characters) when that file exists, else a synthetic arithmetic preference set.

Both let AuxDPO's offsets act: the synthetic set compares four answers per question in all
six pairs, so each answer's shared δ (response keying) moves at its first pair and enters
the next ones within the first epoch; the UltraFeedback rows have one pair per prompt, so
the demo takes half as many of them and passes over them several times. The 24 steps give
each offset enough visits for the health metrics to settle (README, "Healthy aux/*
metrics"): ``aux/null_residual`` falls below 0.5 and ``aux/delta_norm`` levels off under the
prior.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from auxdpo.data.schema import local_data_path

__all__ = ["DEFAULT_ULTRAFEEDBACK", "demo_rows", "run_tiny_demo"]

# The UltraFeedback sample under $AUXDPO_DATA_DIR (auxdpo.data.schema), read when present.
DEFAULT_ULTRAFEEDBACK = "ultrafeedback/train_1k.jsonl"


def _synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Multi-comparison rows: per question the sum and three wrong answers, every pair of
    them, the closer answer preferred."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        errors = [0] + rng.sample([-3, -2, -1, 1, 2, 3], 3)
        errors.sort(key=abs)
        for i in range(4):
            for j in range(i + 1, 4):
                if abs(errors[i]) < abs(errors[j]):
                    rows.append({"prompt": f"What is {a}+{b}? ",
                                 "chosen": f"{a + b + errors[i]}.",
                                 "rejected": f"{a + b + errors[j]}."})
    return rows[:n]


def demo_rows(n: int = 32, path: Path | str | None = DEFAULT_ULTRAFEEDBACK,
              chars: int = 40) -> tuple[list[dict], str]:
    """Short preference rows and their source: ``n // 2`` UltraFeedback pairs (one per
    prompt: the demo's steps pass over them several times), or ``n`` synthetic
    multi-comparison rows."""
    if path == DEFAULT_ULTRAFEEDBACK:
        path = local_data_path(DEFAULT_ULTRAFEEDBACK)
    if path is not None and Path(path).is_file():
        rows = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                short = {k: str(row[k])[:chars] for k in ("prompt", "chosen", "rejected")}
                if short["chosen"].strip() and short["rejected"].strip() and \
                        short["chosen"] != short["rejected"]:
                    rows.append(short)
                if len(rows) == n // 2:
                    return rows, "ultrafeedback"
    return _synthetic_rows(n), "synthetic"


def run_tiny_demo(out_dir: Path | str, *, steps: int = 24, data_path: Path | str | None =
                  DEFAULT_ULTRAFEEDBACK) -> dict[str, Any]:
    """Train AuxDPO (global constraint) for ``steps`` steps; return paths and final metrics."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import torch

    from auxdpo.files import atomic_write_text
    from auxdpo.train.run import resolve_config, run_training

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, source = demo_rows(path=data_path)
    data_file = out / "demo_prefs.jsonl"
    atomic_write_text(data_file, "".join(json.dumps(r) + "\n" for r in rows))
    run_args, config = resolve_config({
        "model_name_or_path": "tiny-gpt2", "dataset_name": str(data_file),
        "output_dir": str(out), "overwrite_output_dir": True,  # holds its data; reruns
        "method": "auxdpo", "aux_constraint": "global",
        "aux_offsets": "response",
        "lambda_null": 1.0, "delta_lr": 0.05, "beta": 0.5, "max_steps": steps,
        "per_device_train_batch_size": 4, "learning_rate": 5e-3,
        "lr_scheduler_type": "constant", "max_length": 128, "logging_steps": 1,
        "save_strategy": "no", "report_to": [], "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "seed": 0, "disable_tqdm": True})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest and robust to busy CPUs
    try:
        result = run_training(run_args, config)
    finally:
        torch.set_num_threads(threads)
    final = result["final"]
    return {"output_dir": result["output_dir"], "data": source,
            "model": str(out / "model.safetensors"),
            "offsets": str(out / "aux_deltas.safetensors"),
            "metrics": result["metrics_file"], "config": result["config"],
            "steps": result["steps"], "final_loss": final.get("loss"),
            "reward_accuracy": final.get("rewards/accuracies"),
            "delta_norm": final.get("aux/delta_norm"),
            "null_residual": final.get("aux/null_residual"),
            "prior": final.get("aux/prior")}
