"""Prepared GPU check for docs/scaling.md (NOT run yet: no GPU was lent to this work).

    python tests/dist_gpu_check.py OUT            # on a machine with 1 or more GPUs
    python tests/dist_gpu_check.py OUT --dry-run  # the same steps on the CPU (checks the script)

Trains the tiny float64 GPT-2 of tests/dist_train.py (runs dpo, auxdpo global, batch and
projection; 16 rows, global batch 8, 4 steps) and compares every result with a 1-process CPU
run: final parameters, δ and u, max absolute difference, limit 1e-8 (float64 everywhere).

1. CPU, 1 process (the reference);
2. 1 GPU, 1 process (``--gpu``): the CUDA path of the Jacobian products;
3. with ≥ 2 GPUs: ``torchrun --nproc_per_node 2`` (NCCL) and
   ``accelerate launch --config_file examples/accelerate/ddp.yaml --num_processes 2``.

Prints one line per (launch, run): ``<launch> <run> world=<W> engine=<E> params=<d> delta=<d>
u=<d> OK|FAIL`` and exits 1 when any difference exceeds the limit or a launch fails.
``--json FILE`` also writes those comparisons as a list of objects (scripts/gpu_check.py reads
it), a failed launch as ``{"launch": ..., "passed": false}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "dist_train.py"
RUNS = "dpo,global,batch,projection"
LIMIT = 1e-8


def _launches(gpus: int, dry_run: bool) -> dict[str, list[str]]:
    python, device = [sys.executable], [] if dry_run else ["--gpu"]
    launches = {"gpu1": [*python, str(SCRIPT)]}
    if gpus >= 2 or dry_run:
        torchrun = [*python, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", str(SCRIPT)]
        config = "ddp_cpu.yaml" if dry_run else "ddp.yaml"
        accelerate = [*python, "-m", "accelerate.commands.launch", "--config_file",
                      str(HERE.parent / "examples" / "accelerate" / config),
                      "--num_processes", "2", "--mixed_precision", "no", str(SCRIPT)]
        launches.update(torchrun2=torchrun, accelerate2=accelerate)
    return {name: [*cmd, "@OUT@", "--runs", RUNS, *device] for name, cmd in launches.items()}


def _run(cmd: list[str], out: Path, data: Path) -> bool:
    cmd = [str(out) if part == "@OUT@" else part for part in cmd] + ["--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        print(" ".join(cmd), "failed:\n", done.stdout[-2000:], done.stderr[-4000:])
    return done.returncode == 0


def _max_diff(one: dict, other: dict, key: str) -> float:
    if key == "params":
        return max((one[key][k] - other[key][k].to(one[key][k])).abs().max().item()
                   for k in one[key])
    if key not in one:
        return 0.0
    return (one[key] - other[key].to(one[key])).abs().max().item()


def main() -> int:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--dry-run", action="store_true", help="CPU in place of the GPUs")
    parser.add_argument("--json", default=None, help="also write the comparisons to this file")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE / "train"))
    import train_helpers

    data = out / "data"
    train_helpers.dataset(16).save_to_disk(str(data))
    gpus = torch.cuda.device_count()
    print(f"GPUs: {gpus}  torch {torch.__version__}")
    if not args.dry_run and gpus == 0:
        print("no GPU visible: run with --dry-run to check the script on the CPU")
        return 1
    ok = _run([sys.executable, str(SCRIPT), "@OUT@", "--runs", RUNS], out / "cpu", data)
    results = [] if ok else [{"launch": "cpu", "passed": False}]
    for name, cmd in _launches(gpus, args.dry_run).items():
        if not _run(cmd, out / name, data):
            ok = False
            results.append({"launch": name, "passed": False})
            continue
        for run in RUNS.split(","):
            one = torch.load(out / "cpu" / f"{run}.pt", weights_only=True)
            other = torch.load(out / name / f"{run}.pt", weights_only=True)
            diffs = {key: _max_diff(one, other, key) for key in ("params", "delta", "u")}
            good = max(diffs.values()) <= LIMIT
            ok = ok and good
            results.append({"launch": name, "run": run, "world_size": other["world_size"],
                            "engine": other["engine"], **diffs, "limit": LIMIT,
                            "passed": good})
            print(f"{name} {run} world={other['world_size']} engine={other['engine']} "
                  + " ".join(f"{k}={v:.2e}" for k, v in diffs.items())
                  + (" OK" if good else " FAIL"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
