"""What the trainer keeps of the reference policy, with and without precomputed log-probs.

    .venv/bin/python benchmarks/bench_reference_memory.py [--models small,medium]

Counts the bytes of the tensors held for π_ref after construction (no training): the frozen
copy's parameters and buffers, and AuxDPO's snapshot of the trainable tensors' θ₀. These are
exact counts, not RSS, so they do not depend on the shared machine's load; the peak of a step
is in bench_trainer.py. Printed as a markdown table (bytes in MiB).
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

MODELS = {"tiny": ("gpt2", 2, 32), "small": ("gpt2", 4, 128), "medium": ("gpt2", 6, 256),
          "medium-llama": ("llama", 6, 256)}
RUNS = [("dpo", "full", False), ("dpo", "full", True), ("auxdpo", "full", False),
        ("auxdpo", "full", True), ("auxdpo", "last-block", False),
        ("auxdpo", "last-block", True)]


def _mib(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def reference_bytes(model_name: str, method: str, capacity: str, precompute: bool) -> dict:
    import datasets

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model
    from auxdpo.train.trainer import AuxDPOTrainer

    arch, layers, hidden = MODELS[model_name]
    model = build_tiny_model(arch, num_layers=layers, hidden_size=hidden, num_heads=4)
    rows = [{"prompt": f"q {i}: ", "chosen": f"yes {i}", "rejected": f"no {i + 1}"}
            for i in range(8)]
    with tempfile.TemporaryDirectory() as out:
        config = AuxDPOConfig(output_dir=out, method=method, capacity=capacity,
                              precompute_ref_log_probs=precompute, report_to=[], bf16=False,
                              gradient_checkpointing=False, use_cpu=True, metrics_file=None,
                              per_device_train_batch_size=4, max_length=64)
        trainer = AuxDPOTrainer(model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                                processing_class=build_char_tokenizer())
        ref = trainer.ref_model
        copy_mib = _mib([*ref.parameters(), *ref.buffers()]) if ref is not None else 0.0
        snapshot = getattr(getattr(trainer.offsets, "products", None), "_snapshot", None) or {}
        return {"policy": _mib(model.parameters()), "copy": copy_mib,
                "snapshot": _mib(snapshot.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,medium")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print("| model | method | capacity | precompute_ref_log_probs | policy (MiB) | reference "
          "copy (MiB) | θ₀ snapshot (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for method, capacity, precompute in RUNS:
            held = reference_bytes(name, method, capacity, precompute)
            print(f"| {name} | {method} | {capacity} | {precompute} | {held['policy']:.2f} | "
                  f"{held['copy']:.2f} | {held['snapshot']:.2f} |")


if __name__ == "__main__":
    main()
