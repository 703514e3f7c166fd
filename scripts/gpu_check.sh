#!/usr/bin/env bash
# The prepared GPU check (docs/walkthrough_qwen3.md, "GPU check"); options: scripts/gpu_check.py.
#   scripts/gpu_check.sh --out summary.json            # one GPU: ≈ 5 minutes (estimate)
#   scripts/gpu_check.sh --dry-run --out summary.json  # CPU, tiny widths
# Exit code 0 only when every check passed. PYTHON picks the interpreter (default: the
# checkout's .venv, else python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/gpu_check.py" "$@"
