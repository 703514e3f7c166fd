"""`make demo`: the main jobs on their embedded defaults, in a few minutes on 2 CPU cores.

1. The exact lab: the paper's Proposition 2 instance (DPO reverses the preference and lowers
   the expected reward; AuxDPO reaches the RLHF solution) and a small sensitivity map.
2. The trainer: a tiny end-to-end AuxDPO run on a causal LM created locally.
Outputs go to ``runs/demo/`` (or the directory given as the first argument).
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "runs/demo").resolve()
    out.mkdir(parents=True, exist_ok=True)

    from auxdpo.harness.lab.experiments import run_demo

    print("== exact lab ==", flush=True)
    files = list(run_demo(out / "lab"))

    print("\n== tiny end-to-end AuxDPO run ==", flush=True)
    from auxdpo.train.demo import run_tiny_demo

    result = run_tiny_demo(out / "train")
    for key, value in result.items():
        print(f"  {key}: {value}")

    print("\nOutputs:")
    for f in files:
        print(f"  {f}")
    print(f"  {out / 'train'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
