"""Trainer speed and memory as ratios, on CPU: AuxDPO vs DPO, and our DPO vs TRL's DPOTrainer.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 12] [--rounds 3] [--json out.json]

Step time: CPU time (``time.process_time``, one torch thread) of one optimizer step (forward,
backward, optimizer, and for AuxDPO the offsets' JVP/VJP step), after 2 warm-up steps. CPU
time rather than wall time, because the development machine is shared and wall times there
swing by 2-5x with other users' load. Trainers of the compared methods run alternately,
``--rounds`` times each; ratios are of the medians (and of the minima) over measured steps. Memory: each configuration runs in its own
subprocess; peak RSS (VmHWM, reset through /proc/self/clear_refs after set-up) minus the RSS
before training, i.e. the training's own peak increment, and the whole-process peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MODELS = {  # name: (architecture, layers, hidden size)
    "tiny": ("gpt2", 2, 32),
    "small": ("gpt2", 4, 128),
}
CAPACITIES = ("last-block", "lora:4", "full")


def _rows(n):
    return [{"prompt": f"Question {i}: what is {i} plus {i % 7}? Answer: ",
             "chosen": f"It is {i + i % 7}, because {i} and {i % 7} add up.",
             "rejected": f"Maybe {i * 3 + 1}; I am not sure at all."} for i in range(n)]


def _make_trainer(kind, model_name, capacity, steps, out):
    import datasets
    from transformers import TrainerCallback

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model
    from auxdpo.train.trainer import AuxDPOTrainer, frozen_copy

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.process_time() - self.start)

    arch, layers, hidden = MODELS[model_name]
    model = build_tiny_model(arch, num_layers=layers, hidden_size=hidden, num_heads=4)
    data = datasets.Dataset.from_list(_rows(64))
    common = dict(output_dir=out, per_device_train_batch_size=8, max_steps=steps,
                  report_to=[], bf16=False, gradient_checkpointing=False, use_cpu=True,
                  save_strategy="no", logging_steps=10_000, disable_tqdm=True,
                  learning_rate=1e-4, max_length=128, seed=0)
    timer = StepTimer()
    if kind == "trl":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model, ref_model=frozen_copy(model), args=DPOConfig(**common),
                             train_dataset=data, processing_class=build_char_tokenizer(),
                             callbacks=[timer])
    else:
        config = AuxDPOConfig(method=kind, capacity=capacity, metrics_file=None, **common)
        trainer = AuxDPOTrainer(model, args=config, train_dataset=data,
                                processing_class=build_char_tokenizer(), callbacks=[timer])
    return trainer, timer


def time_pair(kinds, model_name, capacity, steps, rounds):
    """Median step seconds per kind, trainers alternating ``rounds`` times."""
    times = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as out:
                trainer, timer = _make_trainer(kind, model_name, capacity, steps + 2, out)
                trainer.train()
                times[kind] += timer.times[2:]
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: min(v) for k, v in times.items()})


def _rss_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def memory_child(kind, model_name, capacity, steps):
    """In a subprocess: set up, reset the peak, train; print the peak increment (KiB)."""
    with tempfile.TemporaryDirectory() as out:
        trainer, _ = _make_trainer(kind, model_name, capacity, steps, out)
        before = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM (peak RSS) to the current RSS
        trainer.train()
        print(json.dumps({"increment_kib": _rss_kib("VmHWM") - before,
                          "peak_kib": _rss_kib("VmHWM")}))


def memory(kind, model_name, capacity, steps):
    command = [sys.executable, __file__, "--memory-child", kind, model_name, capacity,
               str(steps)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sections", default="methods,trl", help="methods and/or trl")
    parser.add_argument("--memory-child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        kind, model_name, capacity, steps = args.memory_child
        memory_child(kind, model_name, capacity, int(steps))
        return 0
    results = []
    print("| model | capacity | DPO step (ms) | AuxDPO step (ms) | time ratio (median) | "
          "time ratio (min) | peak increment DPO / AuxDPO (MiB) | increment ratio | "
          "whole-process peak ratio |\n|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(",") if "methods" in args.sections else ():
        for capacity in CAPACITIES:
            med, low = time_pair(("dpo", "auxdpo"), model_name, capacity, args.steps,
                                 args.rounds)
            mem = {k: memory(k, model_name, capacity, args.steps) for k in ("dpo", "auxdpo")}
            row = {"model": model_name, "capacity": capacity, "dpo_s": med["dpo"],
                   "auxdpo_s": med["auxdpo"], "time_ratio": med["auxdpo"] / med["dpo"],
                   "time_ratio_min": low["auxdpo"] / low["dpo"],
                   "increment_ratio": mem["auxdpo"]["increment_kib"]
                   / max(mem["dpo"]["increment_kib"], 1),
                   "peak_ratio": mem["auxdpo"]["peak_kib"] / mem["dpo"]["peak_kib"],
                   "memory_kib": mem}
            results.append(row)
            print(f"| {model_name} | {capacity} | {1e3 * med['dpo']:.1f} | "
                  f"{1e3 * med['auxdpo']:.1f} | {row['time_ratio']:.2f} | "
                  f"{row['time_ratio_min']:.2f} | "
                  f"{mem['dpo']['increment_kib'] / 1024:.1f} / "
                  f"{mem['auxdpo']['increment_kib'] / 1024:.1f} | "
                  f"{row['increment_ratio']:.2f} | {row['peak_ratio']:.3f} |", flush=True)
    print("\n| model | TRL DPOTrainer step (ms) | our dpo step (ms) | ratio ours/TRL (median) "
          "| ratio (min) |\n|---|---|---|---|---|")
    for model_name in args.models.split(",") if "trl" in args.sections else ():
        med, low = time_pair(("trl", "dpo"), model_name, "full", args.steps, args.rounds)
        results.append({"model": model_name, "trl_s": med["trl"], "ours_s": med["dpo"],
                        "ours_over_trl": med["dpo"] / med["trl"],
                        "ours_over_trl_min": low["dpo"] / low["trl"]})
        print(f"| {model_name} | {1e3 * med['trl']:.1f} | {1e3 * med['dpo']:.1f} | "
              f"{med['dpo'] / med['trl']:.3f} | {low['dpo'] / low['trl']:.3f} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
