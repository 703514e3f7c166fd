#!/usr/bin/env bash
# The prior's finite-sample grid (docs/results.md, "The prior on the offsets"): every cell is an
# `auxdpo oracle` n-sweep of exact empirical minimisers, 10 seeds, DPO against AuxDPO with
# the prior at three scales σ (τ = 1/σ² ≈ 0.5, 0.25, 0.11), each with a constant variance
# and with the count-dependent variance σ²·c/(c + c½), c½ = 8 and 16. Run from the
# repository root; OUT (default runs/prior) receives one folder per cell; LANE=1 or 2 runs
# half of the cells (two cores: both at once). Tables and the figure:
# docs/tools/finite_tables.py. About 1.5 h on one core.
set -euo pipefail
OUT=${OUT:-runs/prior}
AUXDPO=${AUXDPO:-.venv/bin/auxdpo}
SEEDS=${SEEDS:-10}
C="--regime finite --finite-solver full-batch --pairs 1000 3000 10000 30000 100000
   --methods dpo auxdpo --aux-delta-scale 1.4 2 3
   --aux-delta-half-count none 8 16 --seeds $SEEDS --max-iter 300
   --rm-steps 0 --quiet"
G="--responses-per-prompt 4 --beta 100"
LANE=${LANE:-}
i=0
run() { local name=$1; shift; i=$((i + 1))
        [ -n "$LANE" ] && [ $(( (i + LANE) % 2 )) -ne 0 ] && return 0
        [ -f "$OUT/$name/results.json" ] && [ -z "${FORCE:-}" ] && return 0
        $AUXDPO oracle $C "$@" --out "$OUT/$name" > /dev/null; echo "$name done"; }
run tokens-anti-b100   --design anti-aligned --beta 100
run tokens-anti-b10    --design anti-aligned --beta 10
run tokens-onpolicy    --design on-policy --beta 100
run groups-policy-hard --design on-policy $G --sampler policy
run groups-policy-soft --design on-policy $G --sampler policy --labels soft
run groups-disagree-hard --design anti-aligned $G --sampler disagreeing
run groups-disagree-soft --design anti-aligned $G --sampler disagreeing --labels soft
run mmlu-head-anti     --family mmlu-choice --capacity head --design anti-aligned --beta 100 \
    --encode-cache runs/mmlu-encode.pt
