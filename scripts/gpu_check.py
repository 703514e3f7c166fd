"""One prepared GPU check (docs/walkthrough_qwen3.md, "GPU check"): ``scripts/gpu_check.sh``.

    scripts/gpu_check.sh --out summary.json            # on a machine with a GPU (≈ 5 min, estimate; with auxdpo diagnose on each model)
    scripts/gpu_check.sh --dry-run --out summary.json  # the same checks on the CPU, tiny widths

Builds random-weight models of the real architecture classes (``Qwen3ForCausalLM``,
``LlamaForCausalLM``) from configs written here, no download, with the real vocabulary sizes
(Qwen3 151,936; Llama 3 128,256) and, on the GPU, the real shapes of Qwen3-0.6B and
Llama-3.2-1B (tied embeddings included). ``--dry-run`` keeps the classes, the vocabularies and
the tying but uses 2 layers of width 16 and a vocabulary of 1,024 (``--vocab-size``: the real
ones take 15-40 s per run on a CPU). Weights are bf16 and the trainer runs with ``bf16: true``
(on the CPU: CPU autocast), as examples/qwen3_06b_auxdpo.yaml does. For each model it trains dpo and auxdpo ``global``, ``batch`` and
``projection`` through ``AuxDPOTrainer`` for a few optimizer steps, each step over the whole
(small) dataset, and checks:

* every run: the loss is finite and falls below its first value; the policy's trainable
  tensors moved; the frozen reference's tensors are bit-for-bit unchanged;
* auxdpo: the reference products run through the trainable tail only (no fallback to the
  whole model);
* ``global``: δ moved, and the running u = A·δ (updated by one VJP per step) equals u
  recomputed from scratch over the dataset, to a bf16 round-off tolerance;
* ``batch``: δ moved; the penalty and ‖A_Bδ_B‖/‖δ_B‖ are finite at every step;
* ``projection`` (only the final norm trains, so the null space of A is not empty): δ moved,
  ‖Aδ‖ ≤ float32 round-off with the stored A, and ≤ bf16 round-off with A·δ taken afresh by
  the reference's VJP (far below the value for a random δ, recorded beside it).

Then ``auxdpo diagnose`` on each model with LoRA (rank 4, last block) over
``--diagnose-pairs`` multi-comparison pairs (default 400 on the GPU with answers of 256 tokens,
16 of 24 tokens on the dry run; 5 bootstrap rounds on the GPU) through the sketched score matrix (256 columns on the GPU, 8 on the dry run, one
power iteration), the path a 10⁴-pair run takes: the report is complete and finite and names
one of the four verdicts; its wall time, time per response and peak memory are recorded
(``--diagnose skip`` leaves it out).

Then the existing DDP/CUDA exactness check, ``tests/dist_gpu_check.py`` (float64: CPU vs 1
GPU, with ≥ 2 GPUs also torchrun and accelerate DDP), unless ``--ddp skip``. Step times and
peak memory (``torch.cuda.max_memory_allocated``; on the CPU the process's peak RSS) are
recorded. The JSON summary lists every check with ``passed`` and its numbers; the exit code is
0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "train"))   # train_helpers: tokenizer and rows
os.environ.setdefault("TQDM_DISABLE", "1")
# torch, transformers and the trainer are imported where they are used: --help stays fast.

# The real configs (config.json of Qwen/Qwen3-0.6B and meta-llama/Llama-3.2-1B); the dry run
# keeps class, vocabulary, tying and rotary settings and shrinks the rest (``TINY``).
MODELS = {
    "qwen3": ("Qwen3Config", dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
        max_position_embeddings=40960, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "llama3": ("LlamaConfig", dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
        max_position_embeddings=131072, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192})),
}
TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8)
AUX = {"method": "auxdpo", "lambda_null": 1.0, "delta_lr": 0.05}
METHODS = {
    "dpo": {"method": "dpo", "capacity": "last-block"},
    "global": {**AUX, "aux_constraint": "global", "capacity": "last-block"},
    "batch": {**AUX, "aux_constraint": "batch", "lambda_amp": 0.1, "capacity": "last-block"},
    # Only the final norm trains: d = width < K = 2n responses, so N(A) has dimension ≥ 16.
    # Its weights are 1.0, where a bf16 step is 2⁻⁷: Adam steps of 1e-3 round to nothing.
    "projection": {**AUX, "aux_constraint": "projection", "learning_rate": 1e-2,
                   "capacity": r"regex:model\.norm\.weight$"},
}
DRY_RUN_VOCAB = 1024
BATCH = 8            # rows per micro-batch; one optimizer step covers the whole dataset
BF16_EPS = 2.0**-7           # torch.finfo(torch.bfloat16).eps
F32_EPS = 2.0**-23           # torch.finfo(torch.float32).eps
# bf16 tolerances: two bf16 evaluations of the same products (other batching, other kernels)
# differ by a few eps_bf16 relative to the summands; 4·eps_bf16 = 3.1e-2 of the scale.
BF16_REL = 4 * BF16_EPS
F32_REL = 1e3 * F32_EPS


def build_model(name: str, *, tiny: bool, device: str, vocab_size: int | None = None,
                seed: int = 0):
    import torch
    import transformers as tf

    class_name, values = MODELS[name]
    values = {**values, **(TINY if tiny else {}), "pad_token_id": 0, "eos_token_id": 1,
              "bos_token_id": 1}
    if vocab_size:
        values["vocab_size"] = vocab_size
    if tiny:
        values["max_position_embeddings"] = 16384  # llama3 rope: above its original 8192
    config = getattr(tf, class_name)(**values)
    torch.manual_seed(seed)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model


def rows_for(method: str, model) -> int:
    """Rows of the run's dataset: one micro-batch, or for projection 2n > d (null space ≥ 16)."""
    if method != "projection":
        return BATCH
    need = model.config.hidden_size // 2 + 8
    return BATCH * math.ceil(need / BATCH)


def step_timer():
    """A callback timing each optimizer step (the offsets' step included), device synced."""
    import torch
    from transformers import TrainerCallback

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def check(name: str, passed: bool, **numbers) -> dict:
    return {"name": name, "passed": bool(passed), **numbers}


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _trainable(model) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _max_abs_diff(one: dict, other: dict) -> float:  # of two {name: tensor}
    return max(float((one[k].detach().float() - other[k].detach().float()).abs().max())
               for k in one)


def train_run(model_name: str, method: str, args, out: Path) -> dict:
    import torch
    import train_helpers  # offline hub settings, the character tokenizer, the rows
    from transformers import PrinterCallback

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.trainer import AuxDPOTrainer

    device = "cpu" if args.dry_run else "cuda"
    model = build_model(model_name, tiny=args.tiny, device=device, vocab_size=args.vocab_size)
    n = rows_for(method, model)
    steps = args.steps
    config = AuxDPOConfig(
        output_dir=str(out / f"{model_name}-{method}"), per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=n // BATCH, max_steps=steps, lr_scheduler_type="constant", beta=0.1, max_length=64, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=args.dry_run, bf16=True,
        gradient_checkpointing=False, seed=0, data_seed=0, dataloader_num_workers=0,
        disable_tqdm=True, metrics_file=None, **{"learning_rate": args.lr, **METHODS[method]})
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer = AuxDPOTrainer(model, args=config, train_dataset=train_helpers.dataset(n),
                            processing_class=train_helpers.tokenizer())
    timer = step_timer()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)    # the JSON holds the logs
    policy = trainer.accelerator.unwrap_model(trainer.model)
    names = list(_trainable(policy))
    reference = dict(trainer.ref_model.named_parameters())
    ref_before = {k: reference[k].detach().clone() for k in names}
    policy_before = {k: v.detach().clone() for k, v in _trainable(policy).items()}
    trainer.train()
    train_s = time.perf_counter() - started
    logs = [e for e in trainer.state.log_history if "loss" in e]
    losses = [e["loss"] for e in logs]
    checks = [
        check("steps", len(timer.times) == steps and len(losses) == steps,
              steps=len(timer.times), expected=steps),
        check("loss_finite", _finite(losses), losses=losses),
        check("loss_decreases", len(losses) > 1 and losses[-1] < losses[0],
              first=losses[0] if losses else None, last=losses[-1] if losses else None),
        check("policy_moved", _max_abs_diff(_trainable(policy), policy_before) > 0,
              max_change=_max_abs_diff(_trainable(policy), policy_before)),
        check("reference_frozen",
              all(torch.equal(reference[k], ref_before[k]) for k in names),
              tensors=len(names), max_change=_max_abs_diff(
                  {k: reference[k] for k in names}, ref_before)),
    ]
    if trainer.offsets is not None:
        checks += offsets_checks(trainer, method, logs)
    record = {
        "model": model_name, "method": method, "rows": n, "steps": steps,
        "trainable_parameters": sum(p.numel() for p in _trainable(policy).values()),
        "dtype": str(next(policy.parameters()).dtype), "bf16_flag": config.bf16,
        "train_s": round(train_s, 3),
        "step_s": [round(t, 4) for t in timer.times],
        "step_s_mean_after_first": (round(sum(timer.times[1:]) / len(timer.times[1:]), 4)
                                    if len(timer.times) > 1 else None),
        "peak_memory_bytes": (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                              else None),
        "checks": checks,
    }
    del trainer, model, policy, reference
    return record


def offsets_checks(trainer, method: str, logs: list[dict]) -> list[dict]:
    offsets = trainer.offsets
    delta = offsets.values()
    products = offsets.products
    checks = [check("delta_moved", float(delta.norm()) > 0, delta_norm=float(delta.norm())),
              # the capacity leaves a frozen prefix: the products must keep to the tail
              check("products_truncated", products.truncated,
                    tail_from=getattr(products.tail_plan, "first", None))]
    if method == "global":
        running = offsets.u.clone()
        offsets.recompute_u(trainer.dataset_batches())
        scale = float(offsets.u.norm())
        rel = float((running - offsets.u).norm()) / scale if scale else math.inf
        checks.append(check("u_matches_recompute", rel <= BF16_REL, relative_difference=rel,
                            tolerance=BF16_REL, u_norm=scale))
    if method == "batch":
        penalties = [e.get("aux/penalty") for e in logs if "aux/penalty" in e]
        residuals = [e.get("aux/null_residual") for e in logs if "aux/null_residual" in e]
        checks.append(check("penalty_finite", bool(penalties) and _finite(penalties + residuals),
                            penalties=penalties, null_residuals=residuals))
    if method == "projection":
        checks += projection_checks(trainer, delta)
    return checks


def projection_checks(trainer, delta) -> list[dict]:
    """δ = Γc in N(A): with the stored A (float32) and with A·δ by the reference's VJP."""
    import torch

    offsets = trainer.offsets
    stored = offsets.jacobian_t                      # Aᵀ, (K, d), float32 from bf16 rows
    norm_a, norm_d = float(stored.norm()), float(delta.norm())
    rel_stored = float((stored.T @ delta).norm()) / (norm_a * norm_d)
    # A·δ afresh: Σ over every row's two responses of f·δ·∇log π_θ₀, f = ω/c per occurrence
    # (the c_k occurrences of slot k add up to ω_k δ_k ∇log π_θ₀(k), whatever the weighting).
    from auxdpo.offsets.micro_batch import occurrence_slots

    factors = offsets.weights / offsets.keys.counts().to(offsets.weights)
    fresh = torch.zeros(offsets.products.dim, dtype=torch.float32, device=delta.device)
    for batch in trainer.dataset_batches():
        chosen, rejected = offsets.deltas(batch["aux_index"])
        slots = occurrence_slots(offsets.slots, batch["aux_index"])
        cotangent = (torch.cat([chosen, rejected]).detach() * factors[slots])
        fresh += offsets.products.vjp(batch, cotangent.to(offsets.products.dtype)).float()
    rel_fresh = float(fresh.norm()) / (norm_a * norm_d)
    generator = torch.Generator(device="cpu").manual_seed(0)
    random = torch.randn(delta.shape, generator=generator).to(stored)
    rel_random = float((stored.T @ random).norm()) / (norm_a * float(random.norm()))
    null_dim = int(offsets.basis.shape[1])
    return [
        check("null_dim_positive", null_dim > 0, null_dim=null_dim, slots=offsets.num_slots,
              d=offsets.products.dim),
        check("delta_in_null_space_stored_A", rel_stored <= F32_REL,
              relative_residual=rel_stored, tolerance=F32_REL),
        check("delta_in_null_space_fresh_vjp", rel_fresh <= BF16_REL < rel_random,
              relative_residual=rel_fresh, tolerance=BF16_REL, random_delta=rel_random),
    ]


def diagnose_rows(pairs: int, length: int) -> list[dict]:
    """Multi-comparison rows: 4 answers per question, every pair of them (6 pairs a question,
    cut to ``pairs``), each answer ``length`` characters (one token each with the character
    tokenizer); the answer's index is its quality."""
    out = []
    question = 0
    while len(out) < pairs:
        answers = [(f"q{question} answer {a}: " + "abcdefgh"[a] * length)[:length]
                   for a in range(4)]
        for first in range(4):
            for second in range(first + 1, 4):
                out.append({"prompt": f"question {question}? ", "chosen": answers[second],
                            "rejected": answers[first]})
        question += 1
    return out[:pairs]


def diagnose_run(model_name: str, args, out: Path) -> dict:
    """``auxdpo diagnose`` on the model with LoRA (rank 4, last block), as a 0.6B user would
    run it: the report is complete and finite, and its cost is recorded."""
    import math

    import datasets
    import torch
    import train_helpers

    from auxdpo.diagnose.run import diagnose_trainer
    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.trainer import AuxDPOTrainer

    device = "cpu" if args.dry_run else "cuda"
    model = build_model(model_name, tiny=args.tiny, device=device, vocab_size=args.vocab_size)
    pairs = args.diagnose_pairs or (16 if args.dry_run else 400)
    length = 24 if args.dry_run else 256
    config = AuxDPOConfig(
        output_dir=str(out / f"{model_name}-diagnose"), method="auxdpo", capacity="lora:4",
        per_device_train_batch_size=BATCH, beta=0.1, max_length=length + 16, report_to=[],
        save_strategy="no", use_cpu=args.dry_run, bf16=True, gradient_checkpointing=False,
        disable_tqdm=True, metrics_file=None)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    rows = datasets.Dataset.from_list(diagnose_rows(pairs, length))
    trainer = AuxDPOTrainer(model, args=config, train_dataset=rows,
                            processing_class=train_helpers.tokenizer())
    report = diagnose_trainer(trainer, bootstrap=0 if args.dry_run else 5, show_progress=False,
                              sketch=8 if args.dry_run else 256, power=1)
    seconds = time.perf_counter() - started
    numbers = [report["step_cosine"], report["linearisation_error"], report["score_shift"],
               *report["predicted_gap"].values()]
    checks = [
        check("report_finite", all(math.isfinite(x) for x in numbers),
              predicted_gap=report["predicted_gap"], step_cosine=report["step_cosine"],
              linearisation_error=report["linearisation_error"]),
        check("verdict_known", report["verdict"] in
              ("auxdpo-helps", "same", "data-too-thin", "not-local"), verdict=report["verdict"]),
        check("sketched", report["scores"]["method"] == "sketch"
              and 0 < report["scores"]["captured"] <= 1 + 1e-6, scores=report["scores"]),
    ]
    return {"model": model_name, "method": "diagnose", "seconds": round(seconds, 2),
            "pairs": report["pairs"], "scores": report["scores"],
            "seconds_per_response": round(seconds / max(report["unique_responses"], 1), 4),
            "parameters": report["parameters"], "responses": report["unique_responses"],
            "peak_memory_bytes": (torch.cuda.max_memory_allocated()
                                  if torch.cuda.is_available() else None),
            "checks": checks}


def ddp_check(args, out: Path) -> dict:
    """tests/dist_gpu_check.py, its per-comparison results read from its --json file."""
    script = ROOT / "tests" / "dist_gpu_check.py"
    results = out / "ddp.json"
    cmd = [sys.executable, str(script), str(out / "ddp"), "--json", str(results)]
    if args.dry_run:
        cmd.append("--dry-run")
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    comparisons = json.loads(results.read_text()) if results.exists() else []
    passed = done.returncode == 0 and bool(comparisons) and all(c["passed"]
                                                                for c in comparisons)
    return check("ddp", passed, command=" ".join(cmd), returncode=done.returncode,
                 wall_s=round(time.perf_counter() - started, 1), comparisons=comparisons,
                 output_tail=(done.stdout + done.stderr)[-3000:] if not passed else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny widths (real classes and vocabularies)")
    parser.add_argument("--out", default="gpu_check.json", help="the JSON summary to write")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny widths on the GPU too (always on with --dry-run)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="override the real vocabulary sizes (default: real; with "
                        f"--dry-run {DRY_RUN_VOCAB}, as the real ones take ≈ 15-40 s per run "
                        "on a CPU)")
    parser.add_argument("--ddp", choices=("run", "skip"), default="run",
                        help="run tests/dist_gpu_check.py (dry run: its CPU launches, ≈ 3 min)")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temp dir)")
    parser.add_argument("--diagnose", choices=("run", "skip"), default="run",
                        help="auxdpo diagnose on each model with LoRA (its cost recorded)")
    parser.add_argument("--diagnose-pairs", type=int, default=None,
                        help="pairs for the diagnose step (default 400 on the GPU, 16 dry)")
    args = parser.parse_args(argv)
    import torch

    args.tiny = args.tiny or args.dry_run
    if args.dry_run and args.vocab_size is None:
        args.vocab_size = DRY_RUN_VOCAB
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no GPU visible; use --dry-run to check on the CPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(args.work or tmp)
        runs = []
        for model_name in args.models.split(","):
            for method in args.methods.split(","):
                try:
                    record = train_run(model_name, method, args, work)
                except Exception as error:  # noqa: BLE001 - recorded as a failed check
                    record = {"model": model_name, "method": method,
                              "checks": [check("runs", False, error=repr(error)[-2000:])]}
                runs.append(record)
                status = "OK" if all(c["passed"] for c in record["checks"]) else "FAIL"
                print(f"{model_name} {method}: {status} "
                      + " ".join(c["name"] for c in record["checks"] if not c["passed"]),
                      flush=True)
        for model_name in args.models.split(","):
            if args.diagnose == "skip":
                break
            try:
                record = diagnose_run(model_name, args, work)
            except Exception as error:  # noqa: BLE001 - recorded as a failed check
                record = {"model": model_name, "method": "diagnose",
                          "checks": [check("runs", False, error=repr(error)[-2000:])]}
            runs.append(record)
            status = "OK" if all(c["passed"] for c in record["checks"]) else "FAIL"
            print(f"{model_name} diagnose: {status}", flush=True)
        ddp = ddp_check(args, work) if args.ddp == "run" else \
            check("ddp", True, skipped=True, reason="--ddp skip")
        print(f"ddp: {'OK' if ddp['passed'] else 'FAIL'}", flush=True)
    checks = [{**c, "name": f"{r['model']}/{r['method']}/{c['name']}"}
              for r in runs for c in r["checks"]] + [ddp]
    summary = {
        "passed": all(c["passed"] for c in checks),
        "dry_run": args.dry_run, "tiny": args.tiny,
        "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available() and not
                   args.dry_run else f"cpu ({platform.processor() or platform.machine()})"),
        "gpus": torch.cuda.device_count(),
        "versions": _versions(),
        "models": {name: {"class": MODELS[name][0].replace("Config", "ForCausalLM"),
                          "real_vocab_size": MODELS[name][1]["vocab_size"],
                          "vocab_size": args.vocab_size or MODELS[name][1]["vocab_size"],
                          **{k: (TINY if args.tiny else MODELS[name][1])[k]
                             for k in ("hidden_size", "num_hidden_layers")}}
                   for name in args.models.split(",")},
        "methods": args.methods.split(",") + (["diagnose"] if args.diagnose == "run" else []),
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "runs": runs, "ddp": ddp,
        "checks": [{"name": c["name"], "passed": c["passed"]} for c in checks],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    failed = [c["name"] for c in checks if not c["passed"]]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed in {summary['wall_s']} s; "
          f"summary: {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 0 if not failed else 1


def _versions() -> dict:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "cuda": torch.version.cuda}


if __name__ == "__main__":
    sys.exit(main())
