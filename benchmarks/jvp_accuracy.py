"""Accuracy of the penalty's δ-gradient A_Bᵀu by each ``aux_jvp`` method, in float32.

    PYTHONPATH=src .venv/bin/python benchmarks/jvp_accuracy.py [--models tiny,small] [--tau ...]

For each model and capacity of the trainer benchmark (bench_trainer.py's models and rows, one
16-row batch prepared by AuxDPOTrainer) and a few random δ: u = A_B·δ (exact VJP), then A_Bᵀu
by ``finite-difference``, ``central-difference`` and ``forward`` on the float32 model, against
forward mode on a float64 copy of the same model. Prints the relative error
‖estimate − exact‖/‖exact‖ (median and max over δ draws).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_trainer import MODELS, _rows  # noqa: E402

METHODS = ("finite-difference", "central-difference", "forward")


def _setup(model_name: str, capacity: str, out: str):
    import datasets

    from auxdpo.train.config import AuxDPOConfig
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model
    from auxdpo.train.trainer import AuxDPOTrainer

    arch, layers, hidden = MODELS[model_name]
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(arch, vocab_size=len(tokenizer), num_layers=layers,
                             hidden_size=hidden, seed=0)
    config = AuxDPOConfig(output_dir=out, method="auxdpo", capacity=capacity, max_steps=1,
                          per_device_train_batch_size=16, report_to=[], use_cpu=True,
                          bf16=False, gradient_checkpointing=False, save_strategy="no",
                          max_length=128, metrics_file=None, disable_tqdm=True)
    trainer = AuxDPOTrainer(model, args=config, train_dataset=datasets.Dataset.from_list(
        _rows(16)), processing_class=tokenizer)
    batch = next(iter(trainer.dataset_batches()))
    return trainer, batch


def _fresh(model_name: str, capacity: str):
    from auxdpo.train.capacity import apply_capacity
    from auxdpo.train.tiny import build_char_tokenizer, build_tiny_model

    arch, layers, hidden = MODELS[model_name]
    model = build_tiny_model(arch, vocab_size=len(build_char_tokenizer()), num_layers=layers,
                             hidden_size=hidden, seed=0)
    plan = apply_capacity(model, capacity)
    if plan.peft_config is not None:
        import peft

        model = peft.get_peft_model(model, plan.peft_config)
    return model


def measure(model_name: str, capacity: str, draws: int, scales: dict[str, float] | None):
    import auxdpo.offsets.differences as differences_module
    from auxdpo.offsets.products import ReferenceProducts
    from auxdpo.train.capacity import trainable_parameter_names

    if scales:
        differences_module.DIFFERENCE_SCALES.update(scales)
    with tempfile.TemporaryDirectory() as out:
        trainer, batch = _setup(model_name, capacity, out)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    names = trainable_parameter_names(policy)
    # The untrained policy is at θ₀; the products truncate to the trainable tail, as in training.
    # A fresh float64 model with the same weights (a deep copy would keep accelerate's patched
    # forward, bound to the original).
    policy64 = _fresh(model_name, capacity).double()
    policy64.load_state_dict({k: v.double() for k, v in policy.state_dict().items()})
    exact_products = ReferenceProducts(policy64, names, jvp_method="forward", truncate=True)
    estimators = {m: ReferenceProducts(policy, names, jvp_method=m, truncate=True,
                                       math_attention_vjp=m == "forward") for m in METHODS}
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    generator = torch.Generator().manual_seed(0)
    n = batch["input_ids"].shape[0]
    for _ in range(draws + 1):  # the first draw warms up the step-size state (pilot call)
        delta = torch.randn(n, generator=generator, dtype=torch.float64)
        u = exact_products.vjp(batch, delta)
        exact = exact_products.jvp(batch, u)
        if not bool(exact.norm() > 0):
            raise RuntimeError("A_Bᵀu is zero: no trainable tensor reaches the log-probs")
        for method, products in estimators.items():
            estimate = products.jvp(batch, u.float()).double()
            errors[method].append(float((estimate - exact).norm() / exact.norm()))
    return {m: {"median": statistics.median(e[1:]), "max": max(e[1:])}
            for m, e in errors.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--capacities", default="last-block,lora:4,full")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--scale", action="append", default=[], metavar="METHOD=C",
                        help="override τ's constant c of a difference method")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scales = {k: float(v) for k, v in (s.split("=") for s in args.scale)}
    rows = []
    print("| model | capacity | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for model_name in args.models.split(","):
        for capacity in args.capacities.split(","):
            result = measure(model_name, capacity, args.draws, scales)
            rows.append({"model": model_name, "capacity": capacity, **result})
            cells = [f"{result[m]['median']:.1e} (max {result[m]['max']:.1e})" for m in METHODS]
            print(f"| {model_name} | {capacity} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
