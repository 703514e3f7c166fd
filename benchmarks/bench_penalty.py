"""Time of the ``global`` mode's penalty products per step vs the per-example gradient loop.

Ours: one JVP (A_Bᵀu, the δ-gradient of λ‖Aδ/(2n)‖² on the batch) plus one VJP
(u += A_B·Δδ_B) per step. The loop of the authors' public notebook: one forward pass and 2B
backward passes, one per response, to form A_B column by column. Both on the same model,
batch and reference point, in float32 on CPU (or CUDA when available and asked for).

    .venv/bin/python benchmarks/bench_penalty.py            # B ∈ {4, 8, 16}
    .venv/bin/python benchmarks/bench_penalty.py --batch-sizes 4 8 --repeats 5 --threads 1

Prints a markdown table; the target is a ratio ≥ B/2.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from auxdpo.offsets.products import ReferenceProducts, eval_mode


def build_model(layers: int, width: int, vocab: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_embd=width, n_head=4, vocab_size=vocab,
                        n_positions=256, attn_implementation="sdpa")
    return GPT2LMHeadModel(config).to(device)


def build_batch(size: int, length: int, vocab: int, device: str) -> dict[str, torch.Tensor]:
    """2·size rows: a 16-token prompt, then completions of varied length, right-padded."""
    gen = torch.Generator().manual_seed(size)
    rows = 2 * size
    input_ids = torch.randint(0, vocab, (rows, length), generator=gen)
    attention_mask = torch.zeros(rows, length, dtype=torch.long)
    completion_mask = torch.zeros(rows, length, dtype=torch.long)
    for r in range(rows):
        total = length - (r % 4) * (length // 8)
        attention_mask[r, :total] = 1
        completion_mask[r, 16:total] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "completion_mask": completion_mask}
    return {k: v.to(device) for k, v in batch.items()}


def products_step(products: ReferenceProducts, batch, u: torch.Tensor,
                  fused: bool = False) -> torch.Tensor:
    """What AuxOffsets.step does in global mode: A_Bᵀu, then A_B·Δδ. ``fused``: the trainer's
    path, one ``linearize`` pass (which also yields the reference log-probs) and its VJP."""
    if fused:
        linear = products.linearize(batch, u)
        return linear.vjp(1e-3 * linear.directional)
    directional = products.jvp(batch, u)
    change = 1e-3 * directional
    return products.vjp(batch, change)


def per_example_loop(products: ReferenceProducts, batch, u: torch.Tensor) -> torch.Tensor:
    """The notebook's way: A_B explicitly, one backward pass per response, then products."""
    theta = [t.detach().requires_grad_(True) for t in products.reference.values()]
    with eval_mode(products.model), torch.enable_grad():
        logps = products.function.logps_fn(batch)(*theta)
        columns = []
        for j in range(logps.shape[0]):
            grads = torch.autograd.grad(logps[j], theta, retain_graph=True)
            columns.append(products.flatten(list(grads)))
    matrix = torch.stack(columns, dim=1)                         # (d, 2B)
    directional = matrix.T @ u
    return matrix @ (1e-3 * directional)


def _seconds(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed_pair(first, second, repeats: int, device: str) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of two functions, runs interleaved so that both see the
    same machine load (the machine may be shared); one warm-up run each."""
    first(), second()
    times_first, times_second = [], []
    for _ in range(repeats):
        times_first.append(_seconds(first, device))
        times_second.append(_seconds(second, device))
    return min(times_first), min(times_second)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jvp-method", default="forward", choices=["forward", "double-vjp"],
                        help="how ReferenceProducts computes A_Bᵀu")
    parser.add_argument("--trainable", default="all", choices=["all", "last-block"],
                        help="all parameters, or the last block (truncated products)")
    parser.add_argument("--fused", action="store_true",
                        help="our side as the trainer runs it: linearize (+ reference log-probs)"
                             " then the VJP from the kept prefix")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.layers, args.width, args.vocab, args.device)
    names = None
    if args.trainable == "last-block":
        names = [n for n, _ in model.named_parameters()
                 if n.startswith(f"transformer.h.{args.layers - 1}.")]
    products = ReferenceProducts(model, names, jvp_method=args.jvp_method)
    u = torch.randn(products.dim, generator=torch.Generator().manual_seed(1)).to(args.device)
    print(f"model: GPT-2 style, {args.layers} layers, width {args.width}, vocab {args.vocab}, "
          f"d = {products.dim:,} trainable; sequence length {args.length}; "
          f"device {args.device}, {torch.get_num_threads()} threads; best of {args.repeats}")
    print("| B | responses 2B | ours: JVP+VJP (s) | per-example loop (s) | ratio | target B/2 |")
    print("|---|---|---|---|---|---|")
    for size in args.batch_sizes:
        batch = build_batch(size, args.length, args.vocab, args.device)
        ours = products_step(products, batch, u, args.fused)
        loop = per_example_loop(products, batch, u)
        error = float((ours - loop).norm() / loop.norm())
        if error > 1e-3:
            raise RuntimeError(f"products disagree with the loop (relative error {error:.2e})")
        t_ours, t_loop = timed_pair(lambda: products_step(products, batch, u, args.fused),
                                    lambda: per_example_loop(products, batch, u),
                                    args.repeats, args.device)
        print(f"| {size} | {2 * size} | {t_ours:.3f} | {t_loop:.3f} | "
              f"{t_loop / t_ours:.1f}× | {size / 2:.0f}× |", flush=True)


if __name__ == "__main__":
    main()
