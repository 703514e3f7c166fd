"""How the default prior on AuxDPO's offsets was chosen: every AuxDPO variant of a set of
full-batch n-sweep run folders, scored against DPO on the same samples.

    .venv/bin/python docs/tools/prior_choice.py RUN_DIR [RUN_DIR ...]

Per variant: the worst mean gap of the variant minus DPO's over every (cell, n), the number of
(cell, n) where it is below DPO's by more than 0.05, the number where more seeds fall below θ₀
than DPO's, and the mean gain over DPO across all (cell, n). The rule, fixed before the grid
was run: among the variants that are never more than 0.05 below DPO and never have more seeds
below θ₀, the largest mean gain; if none qualifies, the fewest failures, then the gain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cell_means(run_dir: str) -> dict:
    rows = json.loads((Path(run_dir) / "results.json").read_text())["rows"]
    out: dict = {}
    for r in rows:
        entry = out.setdefault((r["method"], r["pairs"]), [])
        entry.append(r["gap_closed"])
    return {k: (sum(v) / len(v), sum(g < 0 for g in v)) for k, v in out.items()}


def score(runs: list[str]) -> list[dict]:
    cells = {run: cell_means(run) for run in runs}
    variants = sorted({m for c in cells.values() for m, _ in c if m.startswith("auxdpo")})
    out = []
    for v in variants:
        diffs, fails, more_below = [], 0, 0
        for run, c in cells.items():
            for (m, n), (mean, below) in c.items():
                if m != v or ("dpo", n) not in c:
                    continue
                d_mean, d_below = c[("dpo", n)]
                diffs.append((mean - d_mean, Path(run).name, n))
                fails += mean < d_mean - 0.05
                more_below += below > d_below
        worst = min(diffs)
        out.append({"variant": v, "worst": worst, "fails": fails, "more_below": more_below,
                    "gain": sum(d for d, _, _ in diffs) / len(diffs), "points": len(diffs)})
    return out


def choose(scored: list[dict]) -> dict:
    safe = [s for s in scored if not s["fails"] and not s["more_below"]]
    if safe:
        return max(safe, key=lambda s: s["gain"])
    return min(scored, key=lambda s: (s["fails"] + s["more_below"], -s["gain"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    scored = score(args.runs)
    print("| variant | worst vs DPO (cell, n) | (cell, n) > 0.05 below DPO | more seeds below θ₀ "
          "| mean gain over DPO |")
    print("|---|---|---|---|---|")
    for s in sorted(scored, key=lambda s: -s["gain"]):
        d, cell, n = s["worst"]
        print(f"| {s['variant']} | {d:+.3f} ({cell}, {n:,}) | {s['fails']} of {s['points']} | "
              f"{s['more_below']} | {s['gain']:+.3f} |")
    print(f"\nchosen: {choose(scored)['variant']}")


if __name__ == "__main__":
    main()
