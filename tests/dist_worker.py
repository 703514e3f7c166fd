"""Shared by tests/offsets/test_offsets_collectives.py: a schedule of AuxOffsets steps run either by one
process on the global batches or by W processes (gloo, CPU) on their shares of them.

The schedule lists, per step, the dataset rows of each rank; the 1-process run takes their
concatenation as its global batch. Shares are unequal on purpose and one row sits on both
ranks in one step, so the G_r/G weighting and the once-per-row u update are exercised.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from auxdpo.offsets import AuxOffsets  # noqa: E402
from auxdpo.offsets.collectives import offsets_state_bytes, traffic  # noqa: E402
from auxdpo.offsets.keys import keys_from_ids  # noqa: E402
from auxdpo.offsets.products import ReferenceProducts  # noqa: E402
from offsets_fixtures import (  # noqa: E402
    comparison_rows,
    dataset_batches,
    id_batch,
    id_batches,
    select,
    tiny_gpt2,
)

N_EXAMPLES = 20
F64 = torch.float64
PROJECTION_PARAMS = ["transformer.ln_f.weight", "transformer.ln_f.bias"]   # d = 32 < 2n = 40
# Per step: rows of rank 0, rows of rank 1 (micro-batches of at most 2 rows each).
SCHEDULE = [
    [[0, 1], [2, 3]],
    [[4, 5, 6], [7]],
    [[8, 9], [9, 10]],          # row 9 on both ranks
    [[11], [12, 13, 14]],
    [[15, 16], [17, 18]],
    [[19, 0], [1, 5]],          # rows seen before: their Adam state and u move again
]
CONFIGS = {
    "global": {"mode": "global", "lambda_null": 50.0, "delta_lr": 0.05},
    "global_cap": {"mode": "global", "lambda_null": 50.0, "delta_lr": 0.05, "delta_cap": 0.3},
    "batch": {"mode": "batch", "lambda_null": 50.0, "lambda_amp": 0.1, "delta_lr": 0.05},
    "projection": {"mode": "projection", "delta_lr": 0.05},
    # response keys: 5 prompts × 3 responses in 4 pairs each, so ranks share slots in a step
    "global_keyed": {"mode": "global", "lambda_null": 50.0, "delta_lr": 0.05,
                     "null_weights": "prompt"},
    "batch_keyed": {"mode": "batch", "lambda_null": 50.0, "lambda_amp": 0.1,
                    "delta_lr": 0.05},
    # the Gaussian prior on δ (σ = 0.5): shared slots (c_k = 2 or 3, a slot's occurrences on
    # both ranks in a step) and projection's Γᵀ of the prior's gradient, summed over processes
    "global_prior_keyed": {"mode": "global", "lambda_null": 50.0, "delta_lr": 0.05,
                           "null_weights": "prompt", "delta_scale": 0.5},
    "projection_prior": {"mode": "projection", "delta_lr": 0.05, "delta_scale": 0.5},
}
KEYED_IDS = comparison_rows(num_prompts=5, responses=3, seed=3)        # 20 rows, K = 15


def dataset(keyed: bool = False) -> list[dict]:
    return id_batches(KEYED_IDS, 5) if keyed else dataset_batches(N_EXAMPLES, 5, seed=3)


def _keyed(offsets: AuxOffsets) -> bool:
    return offsets.keys.keying == "response"


def margins() -> torch.Tensor:
    return torch.linspace(-2, 2, N_EXAMPLES, dtype=F64)


def build(name: str) -> AuxOffsets:
    model = tiny_gpt2("sdpa", layers=1)
    names = PROJECTION_PARAMS if name.startswith("projection") else None
    keyed = name.endswith("_keyed")
    keys = keys_from_ids(*KEYED_IDS) if keyed else None
    offsets = AuxOffsets(N_EXAMPLES, ReferenceProducts(model, names), dtype=F64, keys=keys,
                         **CONFIGS[name])
    offsets.prepare(dataset(keyed))
    return offsets


def local_step(offsets: AuxOffsets, rows: list[int], data, row_margins) -> dict:
    """One optimizer step on ``rows``: mean loss over them, in micro-batches of 2 rows."""
    for start in range(0, len(rows), 2):
        part = rows[start:start + 2]
        batch = id_batch(KEYED_IDS, part) if _keyed(offsets) else select(data, part)
        chosen, rejected = offsets.deltas(batch["aux_index"])
        m = row_margins[batch["aux_index"]]
        loss = -F.logsigmoid(m + chosen - rejected).sum() / len(rows)
        loss.backward()
        offsets.accumulate(batch)
    return offsets.step(global_batch_size=len(rows))


def run_schedule(offsets: AuxOffsets, steps, rank: int | None) -> None:
    """rank None: one process on the concatenated rows; else this rank's share."""
    data, row_margins = dataset(_keyed(offsets)), margins()
    for shares in steps:
        rows = [r for share in shares for r in share] if rank is None else shares[rank]
        local_step(offsets, rows, data, row_margins)


def worker(rank: int, world: int, init_file: str, out_dir: str, first_steps: int) -> None:
    """Entry point of ``torch.multiprocessing.spawn``: every config through the schedule's
    first ``first_steps`` steps; saves each config's state_dict as ``<name>.rank<r>.pt``."""
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}",
                                         rank=rank, world_size=world)
    try:
        for name in CONFIGS:
            offsets = build(name)
            traffic(reset=True)
            start = time.perf_counter()
            run_schedule(offsets, SCHEDULE[:first_steps], rank)
            seconds = time.perf_counter() - start
            state = offsets.state_dict()
            state["table"] = offsets.table()
            state["traffic_bytes"] = traffic()["bytes"]
            state["seconds"] = seconds
            torch.save(state, Path(out_dir) / f"{name}.rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


# ---- measurement for docs/scaling.md: python tests/dist_worker.py [--hidden 128 256] --------

def _measure_worker(rank: int, world: int, init_file: str, hidden: int, out_dir: str) -> None:
    import json

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}",
                                             rank=rank, world_size=world)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=hidden, n_head=4, vocab_size=50,
                                       n_positions=64)).float()
    data, row_margins = dataset_batches(64, 8, seed=3), torch.zeros(64)
    result = {"world": world, "hidden": hidden}
    for mode in ("global", "batch"):
        offsets = AuxOffsets(64, ReferenceProducts(model), mode=mode, lambda_null=1.0)
        offsets.prepare(data)
        local_step(offsets, [0, 1, 2, 3], data, row_margins)              # warm-up
        traffic(reset=True)
        start = time.perf_counter()
        for step in range(5):
            rows = list(range(8 * step + 4 * rank, 8 * step + 4 * rank + 4))
            local_step(offsets, rows if world > 1 else list(range(8 * step, 8 * step + 8)),
                       data, row_margins)
        result[mode] = {"seconds_per_step": (time.perf_counter() - start) / 5,
                        "bytes_per_step": traffic()["bytes"] / 5,
                        "state_bytes": offsets_state_bytes(offsets), "dim": offsets.products.dim}
        if world > 1:
            tensor = torch.zeros(offsets.products.dim)
            start = time.perf_counter()
            for _ in range(5):
                torch.distributed.all_reduce(tensor)
            result[mode]["all_reduce_d_seconds"] = (time.perf_counter() - start) / 5
    if rank == 0:
        Path(out_dir, f"measure_{world}_{hidden}.json").write_text(json.dumps(result))
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    import json
    import tempfile

    import torch.multiprocessing as mp

    hidden_sizes = [int(h) for h in sys.argv[1:]] or [128, 256]
    with tempfile.TemporaryDirectory() as folder:
        for hidden in hidden_sizes:
            _measure_worker(0, 1, "", hidden, folder)
            mp.start_processes(_measure_worker, args=(2, f"{folder}/init{hidden}", hidden,
                                                      folder), nprocs=2, start_method="fork")
            for world in (1, 2):
                print(json.dumps(json.loads(Path(folder, f"measure_{world}_{hidden}.json")
                                            .read_text())))
