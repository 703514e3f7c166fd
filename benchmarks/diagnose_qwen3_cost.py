"""What `auxdpo diagnose` costs per response on a model of Qwen3-0.6B's real shape.

    .venv/bin/python benchmarks/diagnose_qwen3_cost.py [--pairs 12] [--length 256]
        [--sketch 8] [--threads 1] [--device cpu]

A random-weight ``Qwen3ForCausalLM`` with Qwen/Qwen3-0.6B's configuration (28 layers, width
1024, vocabulary 151,936; scripts/gpu_check.py's ``build_model``, float32 here) and the
capacity of examples/qwen3_06b_auxdpo.yaml (``lora:4``: LoRA rank 4 on the last block's
attention projections, 40,960 parameters); multi-comparison rows of scripts/gpu_check.py's
``diagnose_rows`` (4 answers a question, every pair, answers of ``--length`` characters, one
token each). Prints the report's size, wall and CPU seconds, seconds per response and per
response and pass over the data (the passes of the score matrix plus the two Jacobians of the
check along the RLHF step), and the peak resident memory, as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "train"))
os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--sketch", default="8", help="as auxdpo diagnose --sketch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import datasets
    import gpu_check
    import torch
    import train_helpers

    from auxdpo.diagnose.run import diagnose_trainer
    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.trainer import AuxDPOTrainer

    torch.set_num_threads(args.threads)
    model = gpu_check.build_model("qwen3", tiny=False, device=args.device).float()
    rows = datasets.Dataset.from_list(gpu_check.diagnose_rows(args.pairs, args.length))
    with tempfile.TemporaryDirectory() as folder:
        config = AuxDPOConfig(
            output_dir=folder, method="auxdpo", capacity="lora:4",
            per_device_train_batch_size=8, beta=0.1, max_length=args.length + 16,
            report_to=[], save_strategy="no", use_cpu=args.device == "cpu", bf16=False,
            gradient_checkpointing=False, disable_tqdm=True, metrics_file=None)
        trainer = AuxDPOTrainer(model, args=config, train_dataset=rows,
                                processing_class=train_helpers.tokenizer())
        sketch = args.sketch if args.sketch == "auto" else int(args.sketch)
        wall, cpu = time.perf_counter(), time.process_time()
        report = diagnose_trainer(trainer, bootstrap=0, show_progress=False, sketch=sketch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    passes = report["scores"].get("passes", 1) + (2 if report["scores"]["method"] == "sketch"
                                                   else 1)
    responses = report["unique_responses"]
    print(json.dumps({
        "pairs": report["pairs"], "responses": responses, "parameters": report["parameters"],
        "scores": report["scores"], "jacobian_passes": passes, "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "wall_s_per_response": round(wall / responses, 2),
        "wall_s_per_response_pass": round(wall / responses / passes, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
        "device": args.device, "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
