"""`auxdpo diagnose` with the score matrix held whole against sketched: time, peak memory and
how far the report moves.

    .venv/bin/python benchmarks/diagnose_sketch.py [--model small] [--capacity full]
        [--pairs 600] [--sketches 0,64,128,256] [--power 1] [--bootstrap 5] [--threads 1]

Each setting runs `auxdpo diagnose --json` in its own process on the recipe of
benchmarks/bench_diagnose.py (GPT-2-shaped random model, the demo's synthetic multi-comparison
rows); wall seconds and the process's peak resident memory (ru_maxrss) are recorded, and each
sketched report is compared with the dense one (sketch 0, the first setting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402
from bench_diagnose import recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_one(config: Path, sketch: str, power: int, bootstrap: int, threads: int) -> dict:
    """One `auxdpo diagnose` process: its report, wall seconds and peak RSS (GB)."""
    script = ("import resource, sys, torch; torch.set_num_threads(int(sys.argv[1])); "
              "from auxdpo.cli import main; code = main(sys.argv[2:]); "
              "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
              "file=sys.stderr); sys.exit(code)")
    argv = [sys.executable, "-c", script, str(threads), "diagnose", "--config", str(config),
            "--json", "--max-pairs", "100000", "--bootstrap", str(bootstrap),
            "--sketch", sketch, "--power", str(power)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"diagnose --sketch {sketch} failed:\n{done.stderr[-2000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK")]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    return {"report": report, "wall_s": wall,
            "peak_gb": int(peak[-1].split()[1]) / 1024 ** 2 if peak else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", choices=("tiny", "small"))
    parser.add_argument("--capacity", default="full")
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--sketches", default="0,64,128,256")
    parser.add_argument("--power", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    print("| sketch | passes | wall (s) | peak RSS (GB) | captured | score rank | null dim | "
          "DPO gap | AuxDPO gap | cos | lin. error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        values = recipe(Path(tmp), args.model, args.capacity, args.pairs)
        config = Path(tmp) / "recipe.yaml"
        config.write_text(yaml.safe_dump(values), encoding="utf-8")
        for sketch in args.sketches.split(","):
            row = run_one(config, sketch, args.power, args.bootstrap, args.threads)
            report, scores = row["report"], row["report"]["scores"]
            rows.append(dict(row, sketch=sketch))
            captured = f"{scores['captured']:.4f}" if "captured" in scores else "1 (dense)"
            rank = ("≥ " if scores.get("saturated") else "") + str(report["score_rank"])
            print(f"| {sketch} | {scores.get('passes', 1)} | {row['wall_s']:.1f} | "
                  f"{row['peak_gb']:.2f} | {captured} | {rank} | {report['null_dim']} | "
                  f"{report['predicted_gap']['dpo']:.3f} | "
                  f"{report['predicted_gap']['auxdpo']:.3f} | {report['step_cosine']:.3f} | "
                  f"{report['linearisation_error']:.2e} |", flush=True)
        first = rows[0]["report"]
        print(f"\n{first['pairs']} pairs, {first['unique_responses']} responses, "
              f"{first['parameters']} parameters ({args.model}, {args.capacity}); "
              f"dense A = {first['parameters'] * first['unique_responses'] * 8 / 1e9:.2f} GB")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
