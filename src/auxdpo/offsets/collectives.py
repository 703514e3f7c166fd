"""Multi-process helpers for AuxDPO's offsets δ (see docs/scaling.md).

Under ``torch.distributed`` (DDP through ``accelerate launch`` / ``torchrun``, or DeepSpeed
ZeRO-1/2) every process holds the full δ table, its row-Adam state and u = A·δ; each step
the processes combine their rows' gradients and products with a few collectives so that all
of them apply the identical update (:class:`auxdpo.offsets.AuxOffsets` calls these helpers).
Without an initialised process group, or with one process, every helper is the identity.

Engines that shard the trainable parameters (FSDP, DeepSpeed ZeRO-3) are refused by
:func:`check_engine_support`: the reference Jacobian products need the full θ₀ on every
process.
"""

from __future__ import annotations

import os

import torch

__all__ = ["all_reduce_", "broadcast_", "check_engine_support", "combine_row_gradients",
           "estimate_costs", "is_distributed", "rows_owned_elsewhere", "offsets_state_bytes",
           "rank", "sharding_engine", "traffic", "world_size"]


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return world_size() > 1


def world_size() -> int:
    """Number of processes (1 without an initialised process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


_TRAFFIC = {"bytes": 0, "calls": 0}


def traffic(reset: bool = False) -> dict[str, int]:
    """Bytes and calls of the collectives made through this module (per process) so far;
    ``reset`` zeroes the counters after reading them."""
    counts = dict(_TRAFFIC)
    if reset:
        _TRAFFIC.update(bytes=0, calls=0)
    return counts


def _count(tensor: torch.Tensor) -> None:
    _TRAFFIC["bytes"] += tensor.numel() * tensor.element_size()
    _TRAFFIC["calls"] += 1


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``op`` "sum" | "min" | "max") over all processes; returns it."""
    if is_distributed():
        _count(tensor)
        ops = {"sum": torch.distributed.ReduceOp.SUM, "min": torch.distributed.ReduceOp.MIN,
               "max": torch.distributed.ReduceOp.MAX}
        torch.distributed.all_reduce(tensor, op=ops[op])
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place broadcast from process ``src``; returns it (identity on one process)."""
    if is_distributed():
        _count(tensor)
        torch.distributed.broadcast(tensor, src=src)
    return tensor


def combine_row_gradients(grad: torch.Tensor, indices: list[torch.Tensor], num_examples: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the ``(m, c)`` gradients of m entries (AuxOffsets: the K slots of δ, c = 1) over
    processes; return them with the step's entries (sorted, unique, over all processes).
    One all-reduce of an ``(m, c + 1)`` table whose last column marks the entries each
    process used."""
    if not is_distributed():
        return grad, torch.unique(torch.cat(indices))
    touched = torch.zeros(num_examples, 1, dtype=grad.dtype, device=grad.device)
    touched[torch.cat(indices)] = 1.0
    table = all_reduce_(torch.cat([grad, touched], dim=1))
    return table[:, :-1].contiguous(), torch.nonzero(table[:, -1] > 0).flatten()


def rows_owned_elsewhere(indices: list[torch.Tensor], num_examples: int) -> torch.Tensor:
    """``(m,)`` bool on CPU: entries (AuxOffsets: slots) of the step whose u-update another
    process makes. The lowest rank holding an entry owns it (all-reduce-min of m ints), so
    each entry of the global batch is counted once. All False on one process."""
    if not is_distributed():
        return torch.zeros(num_examples, dtype=torch.bool)
    index = torch.cat(indices)
    owner = torch.full((num_examples,), world_size(), dtype=torch.long, device=index.device)
    owner[index] = rank()
    all_reduce_(owner, op="min")
    return (owner != rank()).cpu()


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def sharding_engine(model: torch.nn.Module | None = None) -> str | None:
    """Name of an engine that shards the trainable parameters, or None.

    Looks at what ``accelerate launch`` exports (``ACCELERATE_USE_FSDP``,
    ``ACCELERATE_USE_DEEPSPEED`` with ``ACCELERATE_DEEPSPEED_ZERO_STAGE=3``) and, when
    ``model`` is given, at its parameters (ZeRO-3's ``ds_id``, FSDP2's DTensors, FSDP1's
    flat parameters).
    """
    if _truthy("ACCELERATE_USE_FSDP"):
        return "FSDP"
    if _truthy("ACCELERATE_USE_DEEPSPEED") and \
            os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").strip() == "3":
        return "DeepSpeed ZeRO-3"
    if model is None:
        return None
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            return "FSDP"
    for param in model.parameters():
        if hasattr(param, "ds_id"):
            return "DeepSpeed ZeRO-3"
        if type(param).__name__ in {"DTensor", "FlatParameter"} or \
                type(getattr(param, "data", None)).__name__ == "DTensor":
            return "FSDP"
    return None


def check_engine_support(mode: str, model: torch.nn.Module | None = None) -> None:
    """ValueError at start-up when AuxDPO's ``mode`` cannot run on the current engine.

    Every AuxDPO mode evaluates products with the reference Jacobian A (JVP/VJP over θ₀, or
    A itself in ``projection``) that need the full trainable parameters on each process;
    engines that shard them (FSDP, ZeRO-3) are therefore refused, naming what works.
    """
    engine = sharding_engine(model)
    if engine is None:
        return
    raise ValueError(
        f"method auxdpo (aux_constraint={mode!r}) is not supported under {engine}: its "
        "offsets need products with the reference Jacobian over the full trainable "
        "parameters θ₀ on every process, which this engine shards. Use DDP "
        "(examples/accelerate/ddp.yaml) or DeepSpeed ZeRO-1/2 "
        "(examples/accelerate/zero2.yaml), with LoRA or a partial capacity if memory is "
        "short; methods dpo, ipo and dpop can use FSDP (docs/scaling.md).")


def offsets_state_bytes(offsets) -> int:
    """Bytes held by an :class:`auxdpo.offsets.AuxOffsets` (δ or c, Γ, optimizer, u), measured
    from its tensors; excludes the reference products' own snapshot of θ₀, if any."""
    tensors = [getattr(offsets, "raw", None), getattr(offsets, "coef", None), offsets.u,
               getattr(offsets, "basis", None), getattr(offsets, "jacobian_t", None),
               offsets.slots, offsets.weights, offsets.slot_weights.factors]
    tensors += [value for value in offsets.optimizer.state_dict().values()]
    return int(sum(t.numel() * t.element_size() for t in tensors if t is not None))


def estimate_costs(mode: str, num_examples: int, dim: int, *, itemsize: int = 4,
                   optimizer: str = "adam", null_dim: int = 0, num_slots: int | None = None,
                   null_weights: str = "multiplicity") -> dict[str, int]:
    """Closed-form bytes of AuxDPO's extra state per process and of its collectives per
    optimizer step (docs/scaling.md), for n examples and d trainable parameters.

    Returns ``{"delta_state": .., "u": .., "projection_state": .., "comm_per_step": ..}``:
    δ over K slots (``num_slots``, default 2n: row keying) with its optimizer (Adam: value +
    2 moments in ``itemsize`` bytes, an int64 step count per slot), the slot map (n × 2
    int64) and ω (K floats; the per-occurrence factors ω/c too for the reference/prompt
    weightings), u = A·δ (global mode, d floats), A and Γ (projection) and the bytes
    all-reduced per step (G; the K × 2 slot table; the owner ranks (K int64) and the u update
    (d) in global mode; A_B·δ_B (d + 1) in batch mode; c's gradient in projection mode).
    """
    n, d = num_examples, dim
    k = 2 * n if num_slots is None else num_slots
    moments = 2 if optimizer == "adam" else 0
    keys = 16 * n + k * itemsize * (1 if null_weights == "multiplicity" else 2)
    costs = {"delta_state": 0, "u": 0, "projection_state": 0, "comm_per_step": 8}
    if mode == "projection":
        costs["projection_state"] = (k * d + k * null_dim) * itemsize
        costs["delta_state"] = (1 + moments) * null_dim * itemsize + 8 + keys
        costs["comm_per_step"] += null_dim * itemsize
        return costs
    costs["delta_state"] = (1 + moments) * k * itemsize + 8 * k + keys
    costs["comm_per_step"] += 2 * k * itemsize
    if mode == "global":
        costs["u"] = d * itemsize
        costs["comm_per_step"] += 8 * k + d * itemsize
    elif mode == "batch":
        costs["comm_per_step"] += (d + 1) * itemsize
    return costs
