"""Bit-level fingerprint of the trainer's numbers, to compare two versions of the code.

Trains tiny models for a few steps under every loss path and offsets mode a refactor can touch
(dpo/ipo/dpop, AuxDPO global/batch/projection, response and row keys, the prior, LoRA, the
notebook preset, the tail-only reference, precomputed reference log-probs, gradient
accumulation, float32 and float64) and records, per run, every logged loss and ``aux/*``
metric as exact hex floats and a SHA-256 of the final parameters and offsets.

    python benchmarks/fingerprint.py --out runs/fingerprint-before.json
    python benchmarks/fingerprint.py --out runs/fingerprint-after.json \
        --compare runs/fingerprint-before.json

``--compare`` prints one line per run (``same`` or the first difference) and exits 1 on any
difference. CPU, one thread, about a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402

from auxdpo.train import AuxDPOConfig, AuxDPOTrainer  # noqa: E402
from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model  # noqa: E402

torch.set_num_threads(1)
datasets.disable_progress_bars()
datasets.disable_caching()


def _rows(n: int = 12) -> list[dict]:
    """Pairs over 3 prompts × 4 responses each, so response keys share offsets."""
    out = []
    for i in range(n):
        p = i % 3
        a, b = (i // 3) % 4, ((i // 3) + 1 + i % 2) % 4
        out.append({"prompt": f"q{p}: sum {p}+{p + 1}? ", "chosen": f"r{a}" + "!" * a,
                    "rejected": f"r{b}" + "." * b})
    return out


RUNS: dict[str, dict] = {
    "dpo": {"method": "dpo"},
    "ipo": {"method": "ipo"},
    "dpop": {"method": "dpop"},
    "dpo-tail": {"method": "dpo", "capacity": "last-block", "tail_reference": True},
    "auxdpo": {},
    "auxdpo-noprior": {"aux_delta_scale": None, "aux_delta_half_count": None,
                       "aux_null_weights": "multiplicity"},
    "auxdpo-row": {"aux_offsets": "row"},
    "auxdpo-last-block": {"capacity": "last-block"},
    "auxdpo-lora": {"capacity": "lora:2", "arch": "qwen2"},
    "auxdpo-batch": {"aux_constraint": "batch", "lambda_amp": 0.1, "capacity": "last-block"},
    "auxdpo-projection": {"aux_constraint": "projection", "capacity": "regex:lm_head|ln_f"},
    "auxdpo-accum-cap": {"gradient_accumulation_steps": 2, "per_device_train_batch_size": 2,
                         "delta_cap": 3.0, "capacity": "last-block"},
    "auxdpo-precompute": {"precompute_ref_log_probs": True},
    "auxdpo-notebook": {"aux_preset": "notebook", "notebook_lambda_null": 0.5,
                        "capacity": "last-block"},
    "auxdpo-float64": {"dtype": "float64", "capacity": "last-block"},
    "dpo-float64": {"method": "dpo", "dtype": "float64"},
}


def _hash(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_one(name: str, spec: dict, folder: Path) -> dict:
    spec = dict(spec)
    arch = spec.pop("arch", "gpt2")
    dtype = getattr(torch, spec.pop("dtype", "float32"))
    model = build_tiny_model(arch, num_layers=2, hidden_size=16, dtype=dtype, seed=0)
    values = dict(output_dir=str(folder / name), per_device_train_batch_size=4, max_steps=6,
                  report_to=[], bf16=False, gradient_checkpointing=False, save_strategy="no",
                  use_cpu=True, beta=0.5, learning_rate=1e-2, logging_steps=1, seed=0,
                  data_seed=0, max_length=64, lr_scheduler_type="constant",
                  dataloader_num_workers=0, disable_tqdm=True, metrics_file=None)
    values.update(spec)
    trainer = AuxDPOTrainer(model=model, args=AuxDPOConfig(**values),
                            train_dataset=datasets.Dataset.from_list(_rows()),
                            processing_class=build_char_tokenizer())
    trainer.train()
    logs = []
    for entry in trainer.state.log_history:
        logs.append({k: float(v).hex() for k, v in sorted(entry.items())
                     if isinstance(v, (int, float)) and (k in ("loss", "grad_norm") or k.startswith("aux/")
                                                          or k.startswith("rewards/")
                                                          or k.startswith("logps/"))})
    out = {"logs": logs, "params": _hash(p for p in trainer.model.parameters())}
    offsets = getattr(trainer, "offsets", None)
    if offsets is not None:
        out["offsets"] = _hash([offsets.values()])
    return out


def compare(after: dict, before: dict) -> int:
    bad = 0
    for name in before:
        if name not in after:
            print(f"{name}: missing")
            bad += 1
            continue
        a, b = after[name], before[name]
        if a == b:
            print(f"{name}: same")
            continue
        bad += 1
        for key in ("params", "offsets"):
            if a.get(key) != b.get(key):
                print(f"{name}: {key} differ")
        for step, (la, lb) in enumerate(zip(a["logs"], b["logs"])):
            if la != lb:
                diff = {k: (float.fromhex(lb.get(k, "nan")), float.fromhex(la.get(k, "nan")))
                        for k in set(la) | set(lb) if la.get(k) != lb.get(k)}
                print(f"{name}: log {step} differs: {diff}")
                break
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in RUNS.items():
            if args.only and name not in args.only:
                continue
            results[name] = run_one(name, spec, Path(tmp))
            print(f"{name}: done", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        if args.only:
            before = {k: v for k, v in before.items() if k in args.only}
        return compare(results, before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
