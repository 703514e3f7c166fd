#!/usr/bin/env bash
# The data-driven σ (docs/results.md, "A σ estimated from the data"): EM for the prior's
# variance with π_ref-weighted offsets (`--aux-delta-scale em`) against the fixed default, on
# three cells of docs/tools/prior_sweep.sh, 5 seeds. About 40 min on one core.
set -euo pipefail
OUT=${OUT:-runs/prior-em}
AUXDPO=${AUXDPO:-.venv/bin/auxdpo}
C="--regime finite --finite-solver full-batch --pairs 1000 3000 10000 30000 100000
   --methods dpo auxdpo --aux-delta-scale em 2 --seeds 5 --max-iter 300 --rm-steps 0 --quiet"
$AUXDPO oracle $C --design anti-aligned --beta 100 --out "$OUT/tokens-anti-b100" > /dev/null
$AUXDPO oracle $C --design on-policy --beta 100 --out "$OUT/tokens-onpolicy" > /dev/null
$AUXDPO oracle $C --design anti-aligned --beta 100 --responses-per-prompt 4 \
    --sampler disagreeing --out "$OUT/groups-disagree-hard" > /dev/null
