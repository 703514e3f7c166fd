"""Trainer speed and memory as ratios, on CPU: AuxDPO vs DPO, and our DPO vs TRL's DPOTrainer.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 12] [--rounds 3] [--json out.json]
        [--models tiny,small,medium] [--capacities last-block,lora:4,full]
        [--variants auxdpo,auxdpo-keep,auxdpo-unfused] [--baseline dpo|dpo-tail]

Step time: CPU time (``time.process_time``, one torch thread; the wall-clock ratio is printed
too) of one optimizer step (forward,
backward, optimizer, and for AuxDPO the offsets' JVP/VJP step), after 2 warm-up steps. CPU
time rather than wall time, because the development machine is shared and wall times there
swing by 2-5x with other users' load. Trainers of the compared methods run alternately,
``--rounds`` times each; ratios are of the medians (and of the minima) over measured steps. Memory: each configuration runs in its own
subprocess; peak RSS (VmHWM, reset through /proc/self/clear_refs after set-up) minus the RSS
before training, i.e. the training's own peak increment, and the whole-process peak. With
``--malloc-mmap-threshold`` the children run with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed, so
freed large blocks leave the RSS (docs/benchmarks.md, "Memory methodology"); ``--sections memory``
measures memory only.
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
    "medium": ("gpt2", 6, 256),
    "medium-llama": ("llama", 6, 256),
    "deep": ("gpt2", 12, 256),          # GPT-2 small's depth, narrower
    "deep-llama": ("llama", 12, 256),
}
CAPACITIES = ("last-block", "lora:4", "full")
# AuxDPO variants: name -> AuxDPOConfig overrides. "auxdpo" is the default configuration;
# "auxdpo-forward" computes A_Bᵀu by exact forward-mode AD instead of a finite difference,
# "auxdpo-central" by a central difference, "auxdpo-unfused" is the code path before fusion
# and truncation (separate reference forward, whole-model forward-mode JVP and VJP),
# "auxdpo-keep" keeps the reference tail's graph until the step, "auxdpo-noshare" runs the
# frozen prefix again for the reference tail instead of taking the policy forward's input.
# "auxdpo-row" keys δ per pair and side with multiplicity weights (the default keys δ per
# unique response; its weights are auxdpo.train.aux_defaults', per-prompt π_ref weights since
# the prior on δ came in, earlier multiplicity); "auxdpo-prompt" keys per response with
# per-prompt π_ref weights. On
# the default unique rows the slots coincide; --data multi repeats every response in 3 pairs.
# DPO baselines (--baseline): "dpo" scores the reference through the whole model as TRL does;
# "dpo-tail" through the trainable tail from the policy forward's input (tail_reference).
BASELINES = {"dpo": {}, "dpo-tail": {"tail_reference": True}}
# Keys of PathOptions (auxdpo.train.reference_pass) go to the trainer, the rest to the config.
PATH_KEYS = {"jvp", "fuse_reference", "share_prefix", "truncate_products",
             "keep_reference_graph", "delta_optimizer", "recompute_u_every"}
VARIANTS = {
    "auxdpo": {},
    "auxdpo-forward": {"jvp": "forward"},
    "auxdpo-central": {"jvp": "central-difference"},
    "auxdpo-keep": {"keep_reference_graph": True},
    "auxdpo-noshare": {"share_prefix": False},
    "auxdpo-row": {"aux_offsets": "row", "aux_null_weights": "multiplicity"},
    "auxdpo-prompt": {"aux_null_weights": "prompt"},
    # the prior on the offsets off (the default has it): what the prior's step costs
    "auxdpo-noprior": {"aux_delta_scale": None, "aux_delta_half_count": None},
    "auxdpo-unfused": {"fuse_reference": False, "truncate_products": False,
                       "jvp": "forward"},
}


def _rows(n):
    if os.environ.get("AUXDPO_BENCH_DATA", "unique") == "multi":
        return _multi_rows(n)
    return [{"prompt": f"Question {i}: what is {i} plus {i % 7}? Answer: ",
             "chosen": f"It is {i + i % 7}, because {i} and {i % 7} add up.",
             "rejected": f"Maybe {i * 3 + 1}; I am not sure at all."} for i in range(n)]


def _multi_rows(n):
    """Multi-comparison rows: 4 responses per prompt, all 6 pairs (each response in 3)."""
    rows = []
    for i in range(-(-n // 6)):
        answers = [f"It is {i + k}, because {i} and {k} add up." for k in range(4)]
        for w in range(4):
            for loser in range(w + 1, 4):
                rows.append({"prompt": f"Question {i}: what is {i} plus a small number? ",
                             "chosen": answers[w], "rejected": answers[loser]})
    return rows[:n]


def _make_trainer(kind, model_name, capacity, steps, out):
    import datasets
    from transformers import TrainerCallback

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model
    from auxdpo.train.trainer import AuxDPOTrainer, PathOptions, frozen_copy

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

            self.walls = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start, self.wall = time.process_time(), time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.process_time() - self.start)
            self.walls.append(time.perf_counter() - self.wall)

    import datasets as hf_datasets
    import transformers

    hf_datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
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
        if kind in VARIANTS:
            method, overrides = "auxdpo", VARIANTS[kind]
        elif kind in BASELINES:
            method, overrides = "dpo", BASELINES[kind]
        else:
            method, overrides = kind, {}
        options = PathOptions(**{k: v for k, v in overrides.items() if k in PATH_KEYS})
        overrides = {k: v for k, v in overrides.items() if k not in PATH_KEYS}
        config = AuxDPOConfig(method=method, capacity=capacity, metrics_file=None,
                              **overrides, **common)
        trainer = AuxDPOTrainer(model, args=config, train_dataset=data,
                                processing_class=build_char_tokenizer(), callbacks=[timer],
                                path_options=options)
    return trainer, timer


def time_pair(kinds, model_name, capacity, steps, rounds, walls=None, per_round=None):
    """Median and minimum CPU seconds per step for each kind, trainers alternating
    ``rounds`` times; the wall-clock medians go into ``walls`` and each round's median step
    time into ``per_round`` (kind -> list) when dicts are given."""
    times = {k: [] for k in kinds}
    wall = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as out:
                trainer, timer = _make_trainer(kind, model_name, capacity, steps + 2, out)
                trainer.train()
                times[kind] += timer.times[2:]
                wall[kind] += timer.walls[2:]
                if per_round is not None:
                    per_round.setdefault(kind, []).append(statistics.median(timer.times[2:]))
    if walls is not None:
        walls.update({k: statistics.median(v) for k, v in wall.items()})
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: min(v) for k, v in times.items()})


def paired(per_round, kind, base):
    """Median, min and max over rounds of (kind's round median / base's round median): the
    two ran back to back in each round, so slow drifts of the machine cancel."""
    ratios = [a / b for a, b in zip(per_round[kind], per_round[base])]
    return statistics.median(ratios), min(ratios), max(ratios)


def _rss_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _warm_up_torch_func():
    """First use of torch.func's jvp/functional_call loads code and caches (≈ 12 MiB RSS,
    whatever the model size). Paid before the baseline by every configuration, so that the
    increment measures the training's own memory; the whole-process peak still includes it."""
    import torch

    layer = torch.nn.Linear(2, 2)
    params = dict(layer.named_parameters())
    torch.func.jvp(lambda *p: torch.func.functional_call(layer, dict(zip(params, p)),
                                                          (torch.ones(2),)).sum(),
                   tuple(params.values()), tuple(torch.ones_like(p) for p in params.values()))


def memory_child(kind, model_name, capacity, steps):
    """In a subprocess: set up, reset the peak, train; print the peak increment (KiB)."""
    _warm_up_torch_func()
    with tempfile.TemporaryDirectory() as out:
        trainer, _ = _make_trainer(kind, model_name, capacity, steps, out)
        before = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM (peak RSS) to the current RSS
        trainer.train()
        print(json.dumps({"increment_kib": _rss_kib("VmHWM") - before,
                          "peak_kib": _rss_kib("VmHWM")}))


def memory(kind, model_name, capacity, steps, mmap_threshold=None):
    """Peak-RSS figures of one training run in a subprocess; ``mmap_threshold`` sets glibc's
    ``MALLOC_MMAP_THRESHOLD_`` there (see --malloc-mmap-threshold)."""
    command = [sys.executable, __file__, "--memory-child", kind, model_name, capacity,
               str(steps)]
    env = dict(os.environ)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _memory_rows(model_name, capacity, args):
    """Memory only: each kind's training peak increment and its ratio to the baseline's."""
    base, variants = args.baseline, args.variants.split(",")
    mem = {k: memory(k, model_name, capacity, args.steps, args.malloc_mmap_threshold)
           for k in (base, *variants)}
    rows = []
    for variant in variants:
        ratio = mem[variant]["increment_kib"] / max(mem[base]["increment_kib"], 1)
        peak = mem[variant]["peak_kib"] / mem[base]["peak_kib"]
        rows.append({"model": model_name, "capacity": capacity, "variant": variant,
                     "baseline": base, "increment_ratio": ratio, "peak_ratio": peak,
                     "mmap_threshold": args.malloc_mmap_threshold,
                     "memory_kib": {base: mem[base], variant: mem[variant]}})
        print(f"| {model_name} | {capacity} | {variant} / {base} | "
              f"{mem[base]['increment_kib'] / 1024:.1f} / "
              f"{mem[variant]['increment_kib'] / 1024:.1f} | {ratio:.2f} | {peak:.3f} |",
              flush=True)
    return rows


def _method_rows(model_name, capacity, args):
    """DPO and each AuxDPO variant on one model and capacity: time and memory ratios."""
    variants = args.variants.split(",")
    base = args.baseline
    walls, rounds = {}, {}
    med, low = time_pair((base, *variants), model_name, capacity, args.steps, args.rounds,
                         walls, rounds)
    mem = {k: memory(k, model_name, capacity, args.steps, args.malloc_mmap_threshold)
           for k in (base, *variants)}
    rows = []
    for variant in variants:
        pair = paired(rounds, variant, base)
        row = {"model": model_name, "capacity": capacity, "variant": variant, "baseline": base,
               "dpo_s": med[base], "auxdpo_s": med[variant],
               "time_ratio": med[variant] / med[base],
               "time_ratio_min": low[variant] / low[base],
               "paired_ratio": pair[0], "paired_range": pair[1:],
               "wall_ratio": walls[variant] / walls[base],
               "increment_ratio": mem[variant]["increment_kib"]
               / max(mem[base]["increment_kib"], 1),
               "peak_ratio": mem[variant]["peak_kib"] / mem[base]["peak_kib"],
               "memory_kib": {base: mem[base], variant: mem[variant]},
               "round_medians": {base: rounds[base], variant: rounds[variant]}}
        rows.append(row)
        print(f"| {model_name} | {capacity} | {variant} / {base} | {1e3 * med[base]:.1f} | "
              f"{1e3 * med[variant]:.1f} | {row['time_ratio']:.2f} | "
              f"{row['time_ratio_min']:.2f} | {pair[0]:.2f} ({pair[1]:.2f}–{pair[2]:.2f}) | "
              f"{row['wall_ratio']:.2f} | "
              f"{mem[base]['increment_kib'] / 1024:.1f} / "
              f"{mem[variant]['increment_kib'] / 1024:.1f} | "
              f"{row['increment_ratio']:.2f} | {row['peak_ratio']:.3f} |", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="tiny,small,medium",
                        help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument("--capacities", default=",".join(CAPACITIES))
    parser.add_argument("--variants", default="auxdpo",
                        help=f"AuxDPO variants, comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--baseline", default="dpo", choices=sorted(BASELINES),
                        help="the DPO run the AuxDPO variants are compared with")
    parser.add_argument("--data", default="unique", choices=("unique", "multi"),
                        help="unique: every response in one pair; multi: 4 responses per "
                             "prompt, every pair (response-keyed δ shared by 3 pairs)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sections", default="methods,trl",
                        help="methods (time and memory), trl, and/or memory (memory only)")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=None,
                        help="run the memory subprocesses with glibc's MALLOC_MMAP_THRESHOLD_ "
                             "set (bytes): large blocks then go back to the OS when freed, so "
                             "the peak RSS follows live memory rather than heap retention")
    parser.add_argument("--memory-child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["AUXDPO_BENCH_DATA"] = args.data          # memory children read it too
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        kind, model_name, capacity, steps = args.memory_child
        memory_child(kind, model_name, capacity, int(steps))
        return 0
    results = []
    if "methods" in args.sections:
        print("| model | capacity | variant | DPO step (ms CPU) | AuxDPO step (ms CPU) | "
              "time ratio (median) | (min) | paired by round: median (range) | wall ratio "
              "(median) | peak increment DPO / AuxDPO (MiB) | increment ratio | whole-process "
              "peak ratio |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(",") if "methods" in args.sections else ():
        for capacity in args.capacities.split(","):
            results += _method_rows(model_name, capacity, args)
    if "memory" in args.sections:
        print(f"\n| model | capacity | variant / baseline | peak increment (MiB) | increment "
              f"ratio | whole-process peak ratio |   (MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold})"
              "\n|---|---|---|---|---|---|")
        for model_name in args.models.split(","):
            for capacity in args.capacities.split(","):
                results += _memory_rows(model_name, capacity, args)
    if "trl" in args.sections:
        print("\n| model | TRL DPOTrainer step (ms) | our dpo step (ms) | ratio ours/TRL "
              "(median) | ratio (min) | paired by round: median (range) |\n|---|---|---|---|---|---|")
    for model_name in args.models.split(",") if "trl" in args.sections else ():
        rounds = {}
        med, low = time_pair(("trl", "dpo"), model_name, "full", args.steps, args.rounds,
                             per_round=rounds)
        pair = paired(rounds, "dpo", "trl")
        results.append({"model": model_name, "trl_s": med["trl"], "ours_s": med["dpo"],
                        "ours_over_trl": med["dpo"] / med["trl"],
                        "ours_over_trl_min": low["dpo"] / low["trl"],
                        "paired_ratio": pair[0], "paired_range": pair[1:]})
        print(f"| {model_name} | {1e3 * med['trl']:.1f} | {1e3 * med['dpo']:.1f} | "
              f"{med['dpo'] / med['trl']:.3f} | {low['dpo'] / low['trl']:.3f} | "
              f"{pair[0]:.3f} ({pair[1]:.3f}–{pair[2]:.3f}) |", flush=True)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as handle:
            json.dump(results, handle, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
