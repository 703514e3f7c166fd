"""scripts/gpu_check.sh --dry-run: the prepared GPU check on the CPU (tiny widths, the real
Qwen3/Llama classes), its exit code and its JSON summary. The default test calls the script's
``main`` in this process (the suite has torch and transformers imported already); the shell
wrapper itself runs with ``--help`` here and in full in the slow test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
MODELS = {"qwen3": "Qwen3ForCausalLM", "llama3": "LlamaForCausalLM"}
METHODS = ("dpo", "global", "batch", "projection")
COMMON = {"steps", "loss_finite", "loss_decreases", "policy_moved", "reference_frozen"}
OFFSETS = {"delta_moved", "products_truncated"}
AUX = {"global": OFFSETS | {"u_matches_recompute"},
       "batch": OFFSETS | {"penalty_finite"},
       "projection": OFFSETS | {"null_dim_positive", "delta_in_null_space_stored_A",
                                "delta_in_null_space_fresh_vjp"}}


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shell(tmp_path, *extra, timeout=600):
    out = tmp_path / "summary.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work"), *extra],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def _assert_runs(summary):
    assert summary["passed"] is True and summary["dry_run"] is True
    assert {name: model["class"] for name, model in summary["models"].items()} == MODELS
    assert summary["models"]["qwen3"]["real_vocab_size"] == 151936
    assert summary["models"]["llama3"]["real_vocab_size"] == 128256
    runs = {(r["model"], r["method"]): r for r in summary["runs"]}
    assert set(runs) == {(m, k) for m in MODELS for k in (*METHODS, "diagnose")}
    for model in MODELS:                      # auxdpo diagnose with LoRA on the real classes
        run = runs.pop((model, "diagnose"))
        checks = {c["name"]: c for c in run["checks"]}
        assert set(checks) == {"report_finite", "verdict_known", "sketched"}, model
        assert all(c["passed"] for c in checks.values()), (model, checks)
        # 16 pairs of 4 answers a question: 3 questions, 12 answers; sketched to 8 columns.
        assert run["parameters"] > 0 and run["pairs"] == 16 and run["responses"] == 12
        assert run["scores"]["size"] == 8 and run["seconds_per_response"] > 0
    for (model, method), run in runs.items():
        checks = {c["name"]: c for c in run["checks"]}
        assert set(checks) == COMMON | AUX.get(method, set()), (model, method)
        assert all(c["passed"] for c in checks.values()), (model, method, checks)
        assert run["dtype"] == "torch.bfloat16" and len(run["step_s"]) == run["steps"]
        losses = checks["loss_finite"]["losses"]
        assert losses[-1] < losses[0] == pytest.approx(0.6931471805599453)  # log 2 at θ₀
        if method == "global":
            u = checks["u_matches_recompute"]
            assert u["relative_difference"] <= u["tolerance"] and u["u_norm"] > 0
        if method == "projection":
            fresh = checks["delta_in_null_space_fresh_vjp"]
            assert fresh["relative_residual"] <= fresh["tolerance"] < fresh["random_delta"]
    names = [c["name"] for c in summary["checks"]]
    assert len(names) == len(set(names)) and all(c["passed"] for c in summary["checks"])
    assert "ddp" in names


def test_dry_run_passes_every_check_and_writes_the_summary(tmp_path):
    out = tmp_path / "summary.json"
    code = _script().main(["--dry-run", "--ddp", "skip", "--out", str(out),
                           "--work", str(tmp_path / "work")])
    summary = json.loads(out.read_text())
    assert code == 0, [c for c in summary["checks"] if not c["passed"]]
    _assert_runs(summary)
    assert summary["ddp"]["skipped"] is True


def test_shell_wrapper_runs_the_script():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "--help"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--dry-run" in done.stdout and "--ddp" in done.stdout


@pytest.mark.slow
def test_dry_run_with_the_ddp_check(tmp_path):
    """Also tests/dist_gpu_check.py --dry-run (CPU reference, torchrun and accelerate DDP)."""
    summary = _shell(tmp_path, timeout=1800)
    _assert_runs(summary)
    comparisons = summary["ddp"]["comparisons"]
    assert {c["launch"] for c in comparisons} == {"gpu1", "torchrun2", "accelerate2"}
    assert all(c["passed"] and c["params"] <= c["limit"] for c in comparisons)
