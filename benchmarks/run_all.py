"""Run every benchmark in this folder, one after another, each in its own process.

    .venv/bin/python benchmarks/run_all.py            # the commands of docs/benchmarks.md
    .venv/bin/python benchmarks/run_all.py --quick    # fewer repeats: a smoke check (~minutes)
    .venv/bin/python benchmarks/run_all.py --only trainer penalty

Each benchmark prints its own markdown table; this script only sequences them and reports
each one's wall time and exit status. Benchmarks are never run as tests (their numbers are
ratios measured within one process; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, full arguments, quick arguments)
BENCHMARKS = {
    "lab": ("bench_lab.py", [], ["--seeds", "2", "--instances", "1", "--lbfgs-iters", "200"]),
    "penalty": ("bench_penalty.py", [], ["--batch-sizes", "4", "8", "--repeats", "2"]),
    "oracle": ("bench_oracle.py", [], ["--rounds", "1", "--repeats", "2",
                                        "--capacities", "norm", "lora:1"]),
    "fullbatch": ("bench_fullbatch.py", [], ["--pairs", "1000", "--max-iter", "50",
                                             "--trainer-epochs", "1"]),
    "trainer": ("bench_trainer.py", ["--steps", "8", "--rounds", "3"],
                ["--steps", "4", "--rounds", "1", "--models", "tiny"]),
    "reference-memory": ("bench_reference_memory.py", [], ["--models", "tiny"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None,
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or list(BENCHMARKS):
        script, full, quick = BENCHMARKS[name]
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"## {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        print(f"## {name}: exit {code}, {time.perf_counter() - start:.1f} s wall\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
