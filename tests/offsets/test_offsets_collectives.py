"""AuxOffsets across processes: 2 CPU processes (gloo) against 1 process with the same
global batches, for the global (with and without cap), batch and projection modes (with and
without the prior on δ), and a 2-process state resumed in 1 process. See docs/scaling.md.

The trainer-level tests (``slow``: about 390 s on 2 cores) launch ``tests/dist_train.py``
with ``torchrun --nproc_per_node 2`` (gloo on CPU), with ``accelerate launch --config_file
examples/accelerate/ddp_cpu.yaml``, with ``zero2_cpu.yaml`` (DeepSpeed ZeRO-2; skipped when
deepspeed is not installed) and with plain ``python``:
``.venv/bin/pytest -q -m slow tests/offsets/test_collectives.py``. Unit level (default suite):
``.venv/bin/pytest -q tests/offsets/test_collectives.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import dist_worker
from auxdpo.offsets.collectives import (
    check_engine_support,
    estimate_costs,
    offsets_state_bytes,
    sharding_engine,
    world_size,
)
from tolerance import assert_close

FIRST_STEPS = 4                   # steps run by 2 processes before the 1-process resume
# Roundings allowed between a 2-process and a 1-process schedule of a few float64 steps,
# at each tensor's own scale (the all-reduce sums the gradients in another order).
OPS = 1e3


@pytest.fixture(scope="module")
def two_process_states(tmp_path_factory):
    """Every config's state after the schedule's first steps, from each of 2 processes."""
    folder = tmp_path_factory.mktemp("dist")
    init_file = str(folder / "init")
    # fork: the children inherit the imported torch/transformers (spawn re-imports: ~20 s).
    mp.start_processes(dist_worker.worker, args=(2, init_file, str(folder), FIRST_STEPS),
                       nprocs=2, join=True, start_method="fork")
    return {name: [torch.load(folder / f"{name}.rank{r}.pt", weights_only=True)
                   for r in (0, 1)] for name in dist_worker.CONFIGS}


@pytest.mark.parametrize("name", list(dist_worker.CONFIGS))
def test_measured_state_and_traffic_match_the_estimates(two_process_states, name):
    offsets = dist_worker.build(name)
    null_dim = offsets.basis.shape[1] if name.startswith("projection") else 0
    costs = estimate_costs(offsets.mode, offsets.num_examples, offsets.products.dim,
                           itemsize=8, null_dim=null_dim, num_slots=offsets.num_slots,
                           null_weights=offsets.null_weights)
    assert offsets_state_bytes(offsets) == (costs["delta_state"] + costs["u"]
                                            + costs["projection_state"])
    for state in two_process_states[name]:                 # counted after prepare()
        assert state["traffic_bytes"] == FIRST_STEPS * costs["comm_per_step"]


def _assert_states_close(state, other, ops):
    """``ops=0``: bit-exact."""
    assert_close(state["table"], other["table"], ops=ops)
    for key in ("raw", "coef", "u"):
        if key in state:
            assert_close(state[key], other[key], ops=ops, msg=key)
    for key, value in state["optimizer"].items():
        assert_close(value, other["optimizer"][key], ops=ops, msg=key)
    assert state["num_steps"] == other["num_steps"]


@pytest.mark.parametrize("name", list(dist_worker.CONFIGS))
def test_two_processes_equal_one_process_with_the_global_batch(two_process_states, name):
    rank0, rank1 = two_process_states[name]
    # Bit-exact: every process applies the same all-reduced numbers in the same order.
    _assert_states_close(rank0, rank1, ops=0)
    single = dist_worker.build(name)
    dist_worker.run_schedule(single, dist_worker.SCHEDULE[:FIRST_STEPS], rank=None)
    expected = single.state_dict()
    expected["table"] = single.table()
    assert expected["table"].abs().max() > 1e-3         # δ really moved
    if name.startswith("projection"):                   # d = 32 < 2n = 40: real null space
        assert single.basis.shape[1] >= 8
    _assert_states_close(rank0, expected, ops=OPS)
    if name.startswith("global"):                       # u = A·δ on the 2-process side too
        recomputed = dist_worker.build(name)
        recomputed.load_state_dict(rank0, recompute=True)
        assert_close(recomputed.u, rank0["u"], ops=OPS)


@pytest.mark.parametrize("name", list(dist_worker.CONFIGS))
def test_two_process_state_resumes_in_one_process(two_process_states, name):
    uninterrupted = dist_worker.build(name)
    dist_worker.run_schedule(uninterrupted, dist_worker.SCHEDULE, rank=None)
    resumed = dist_worker.build(name)
    state = {k: v for k, v in two_process_states[name][0].items() if k != "table"}
    resumed.load_state_dict(state)
    dist_worker.run_schedule(resumed, dist_worker.SCHEDULE[FIRST_STEPS:], rank=None)
    assert_close(resumed.table(), uninterrupted.table(), ops=OPS)
    if resumed.u is not None:
        assert_close(resumed.u, uninterrupted.u, ops=OPS)


def test_single_process_helpers_are_identities():
    assert world_size() == 1


@pytest.mark.parametrize("env, engine", [
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     "DeepSpeed ZeRO-3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ({}, None),
])
def test_sharding_engines_are_refused_at_start_up(monkeypatch, env, engine):
    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert sharding_engine() == engine
    if engine is None:
        check_engine_support("global")
        return
    with pytest.raises(ValueError, match=f"not supported under {engine}.*ddp.yaml"):
        dist_worker.build("batch")
    assert os.environ.get("ACCELERATE_USE_FSDP", "") in {"", "true"}


def test_sharded_parameters_are_detected_on_the_model():
    model = dist_worker.tiny_gpt2("sdpa", layers=1)
    assert sharding_engine(model) is None
    next(model.parameters()).ds_id = 0                  # what ZeRO-3 attaches
    assert sharding_engine(model) == "DeepSpeed ZeRO-3"


# ---- trainer level: torchrun (2 processes) against python (1 process) -------------------

SCRIPT = Path(__file__).resolve().parents[1] / "dist_train.py"
TRAINER_RUNS = ("dpo", "global", "global_fd", "batch", "global_precomputed", "projection")
# The difference JVP's runs agree to its error level (docs/offsets.md), not to round-off.
_FD_LEVEL = {"global_fd": 1e-6}
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "accelerate"
ACCELERATE_RUNS = ("dpo", "global", "batch", "projection")


def _launch(out: Path, *extra: str, processes: int = 1, accelerate: str | Path | None = None
            ) -> None:
    """Run dist_train.py in 1 process (python), ``processes`` (torchrun) or through
    ``accelerate launch --config_file examples/accelerate/<accelerate>.yaml`` (or the config
    file at ``accelerate``, a Path)."""
    launcher = [sys.executable]
    if accelerate:
        if not isinstance(accelerate, Path):
            accelerate = ACCELERATE_CONFIGS / f"{accelerate}.yaml"
        launcher += ["-m", "accelerate.commands.launch", "--config_file", str(accelerate)]
    elif processes > 1:
        # --standalone: the rendezvous picks its own free port (no race with other jobs).
        launcher += ["-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([*launcher, str(SCRIPT), str(out), *extra], env=env, timeout=900,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory):
    """Folders: 1 process × 4 steps; 2 processes × 4 steps; 2 processes × 2 steps with a
    checkpoint, resumed by 1 process to step 4; 1 process's step-2 checkpoint resumed by 2. Global batch 8 of 16 rows everywhere."""
    import datasets

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    import train_helpers

    root = tmp_path_factory.mktemp("dist_train")
    data = root / "data"
    train_helpers.dataset(16).save_to_disk(str(data))
    common = ["--runs", ",".join(TRAINER_RUNS), "--data", str(data)]
    _launch(root / "one", *common, "--save-steps", "2")     # checkpoints 2 and 4
    _launch(root / "two", *common, processes=2)
    _launch(root / "two_ckpt", *common, "--steps", "2", "--save-steps", "2", processes=2)
    _launch(root / "resumed", *common, "--resume", str(root / "two_ckpt"))
    _launch(root / "resumed_by_two", *common, "--resume", str(root / "one"), processes=2)
    datasets.disable_caching()
    return root


def _compare(one: dict, other: dict, atol: float | None = None,
             offsets_atol: float | None = None, relative: float | None = None) -> None:
    """``atol``/``offsets_atol``: measured float32 levels (DeepSpeed) for the parameters and
    for δ, u. Otherwise every tensor agrees to ``relative`` of its own largest entry; by
    default round-off of a float64 trainer run whose all-reduce reorders every gradient sum:
    1e6 roundings (2e-10 relative; Adam's m/√v divides round-off by small gradients)."""
    for key in ("delta", "u"):
        assert (key in one) == (key in other)
    pairs = [(other["params"][k], v, atol) for k, v in one["params"].items()]
    pairs += [(other[k], one[k], offsets_atol) for k in ("delta", "u") if k in one]
    if relative is None:
        relative = 1e6 * torch.finfo(torch.float64).eps
    for got, want, fixed in pairs:
        scale = max(float(got.abs().max()), float(want.abs().max()))
        torch.testing.assert_close(got, want, rtol=0,
                                   atol=fixed if fixed is not None else relative * scale)
    assert one.get("null_dim") == other.get("null_dim")


@pytest.mark.slow
@pytest.mark.parametrize("run", TRAINER_RUNS)
def test_trainer_two_processes_equal_one_process(trainer_runs, run):
    one = torch.load(trainer_runs / "one" / f"{run}.pt", weights_only=True)
    two = torch.load(trainer_runs / "two" / f"{run}.pt", weights_only=True)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    if "delta" in one:
        assert one["delta"].abs().max() > 1e-3                 # δ really trained
    if run == "projection":                                    # a real null space
        assert one["null_dim"] >= 16
    _compare(one, two, relative=_FD_LEVEL.get(run))


@pytest.mark.slow
@pytest.mark.parametrize("run", TRAINER_RUNS)
def test_trainer_two_process_checkpoint_resumes_in_one_process(trainer_runs, run):
    folder = trainer_runs / "two_ckpt" / run / "checkpoint-2"
    assert (folder / "rng_state_1.pth").exists()                # written by 2 processes
    one = torch.load(trainer_runs / "one" / f"{run}.pt", weights_only=True)
    resumed = torch.load(trainer_runs / "resumed" / f"{run}.pt", weights_only=True)
    assert resumed["world_size"] == 1
    _compare(one, resumed, relative=_FD_LEVEL.get(run))


@pytest.mark.slow
@pytest.mark.parametrize("run", TRAINER_RUNS)
def test_trainer_one_process_checkpoint_resumes_in_two_processes(trainer_runs, run):
    one = torch.load(trainer_runs / "one" / f"{run}.pt", weights_only=True)
    resumed = torch.load(trainer_runs / "resumed_by_two" / f"{run}.pt", weights_only=True)
    assert resumed["world_size"] == 2
    _compare(one, resumed, relative=_FD_LEVEL.get(run))


# ---- accelerate launch (examples/accelerate/ddp_cpu.yaml) and DeepSpeed ZeRO-2 ------------

# 2 processes × 2 micro-batches of 2 rows: the same global batch of 8 as the 1-process run
# (1 micro-batch of 8), so gradient accumulation is covered too.
ACCUMULATE = ("--global-batch", "4", "--set", "gradient_accumulation_steps=2")


@pytest.fixture(scope="module")
def accelerate_runs(trainer_runs):
    """``accelerate launch --config_file examples/accelerate/ddp_cpu.yaml`` (2 processes)."""
    out = trainer_runs / "accelerate"
    _launch(out, "--runs", ",".join(ACCELERATE_RUNS), "--data", str(trainer_runs / "data"),
            *ACCUMULATE, accelerate="ddp_cpu")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("run", ACCELERATE_RUNS)
def test_accelerate_launch_two_processes_equal_one_process(trainer_runs, accelerate_runs, run):
    one = torch.load(trainer_runs / "one" / f"{run}.pt", weights_only=True)
    two = torch.load(accelerate_runs / f"{run}.pt", weights_only=True)
    assert (two["world_size"], two["engine"]) == (2, "DDP")   # really 2 processes
    _compare(one, two)


def _has_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


DEEPSPEED_RUNS = ("dpo", "global", "batch", "projection")


@pytest.fixture(scope="module")
def deepspeed_runs(trainer_runs):
    """``accelerate launch --config_file examples/accelerate/zero2_cpu.yaml`` (2 processes,
    ZeRO-2 on CPU). The first run on a machine JIT-compiles DeepSpeed's shared-memory
    all-reduce (minutes; cached in ~/.cache/torch_extensions)."""
    out = trainer_runs / "zero2"
    _launch(out, "--runs", ",".join(DEEPSPEED_RUNS), "--data", str(trainer_runs / "data"),
            *ACCUMULATE, accelerate="zero2_cpu")
    return out


@pytest.mark.slow
@pytest.mark.skipif(not _has_deepspeed(), reason="deepspeed is not installed")
@pytest.mark.parametrize("run", DEEPSPEED_RUNS)
def test_deepspeed_zero2_two_processes_match_one_process(trainer_runs, deepspeed_runs, run):
    """ZeRO-1/2 keep float32 master weights and Adam states, so the float64 model is stepped
    in float32: parameters agree to float32 rounding (measured: 1.8e-7 absolute, while they
    moved by 2e-2), δ and u, kept by AuxOffsets outside ZeRO, to 1e-8 (measured 8e-10)."""
    one = torch.load(trainer_runs / "one" / f"{run}.pt", weights_only=True)
    two = torch.load(deepspeed_runs / f"{run}.pt", weights_only=True)
    assert (two["world_size"], two["engine"]) == (2, "DEEPSPEED zero2")
    init = dist_train_initial_params()
    moved = max((one["params"][k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-2
    _compare(one, two, atol=2e-6, offsets_atol=1e-8)



ZERO3_RUNS = ("dpo",)


@pytest.fixture(scope="module")
def zero3_runs(trainer_runs, tmp_path_factory):
    """``zero2_cpu.yaml`` with ``zero_stage: 3`` (2 processes, ZeRO-3 on CPU). Under ZeRO-3,
    transformers builds a model from its config inside ``zero.Init``, which draws other weights
    than one process does: the run starts from dist_train's tiny model saved to disk."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    import train_helpers

    init = trainer_runs / "init"
    train_helpers.model().save_pretrained(str(init))
    config = tmp_path_factory.mktemp("zero3") / "zero3_cpu.yaml"
    text = (ACCELERATE_CONFIGS / "zero2_cpu.yaml").read_text()
    config.write_text(text.replace("zero_stage: 2", "zero_stage: 3"))
    out = trainer_runs / "zero3"
    _launch(out, "--runs", ",".join(ZERO3_RUNS), "--data", str(trainer_runs / "data"),
            "--init", str(init), *ACCUMULATE, accelerate=config)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not _has_deepspeed(), reason="deepspeed is not installed")
@pytest.mark.parametrize("run", ZERO3_RUNS)
def test_deepspeed_zero3_two_processes_match_one_process(trainer_runs, zero3_runs, run):
    """The frozen reference copy of a ZeRO-3 model must hold the gathered weights (a plain
    deep copy held empty shards and the first step crashed). ZeRO-3's ``zero.Init`` casts the
    model itself to float32 (forward and backward, not only the master weights as in
    ZeRO-2), and Adam turns float32 noise in near-zero gradients into steps of full size:
    a 1-process float32 run differs from the float64 one by 5.2e-6, this run by 3.9e-6,
    while the parameters moved by 2e-2 (a reference of empty shards: the run crashes; a wrong
    reference or missing gradient reduction: differences of 1e-2 and more)."""
    one = torch.load(trainer_runs / "one" / f"{run}.pt", weights_only=True)
    two = torch.load(zero3_runs / f"{run}.pt", weights_only=True)
    assert (two["world_size"], two["engine"]) == (2, "DEEPSPEED zero3")
    init = dist_train_initial_params()
    moved = max((one["params"][k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-2
    two["params"] = {k: v.double() for k, v in two["params"].items()}      # float32 here
    _compare(one, two, atol=2e-5)


def dist_train_initial_params() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    import train_helpers

    return {k: v.detach() for k, v in train_helpers.model().named_parameters()}


# ---- real launches of the sharding engines: AuxDPO must stop at start-up ------------------

FSDP_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config: {fsdp_version: 2, fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP,
              fsdp_cpu_ram_efficient_loading: false, fsdp_state_dict_type: FULL_STATE_DICT}
num_machines: 1
num_processes: 2
main_process_port: 0
mixed_precision: 'no'
use_cpu: true
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["FSDP", "DeepSpeed ZeRO-3"])
def test_sharding_engine_launch_refuses_auxdpo_at_start_up(tmp_path, engine):
    if engine.startswith("DeepSpeed"):
        if not _has_deepspeed():
            pytest.skip("deepspeed is not installed")
        text = (ACCELERATE_CONFIGS / "zero2_cpu.yaml").read_text()
        text = text.replace("zero_stage: 2", "zero_stage: 3")
    else:
        text = FSDP_CPU
    config = tmp_path / "engine.yaml"
    config.write_text(text)
    run = ACCELERATE_CONFIGS.parents[0] / "tiny_auxdpo.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(config), "-m", "auxdpo", "train", "--config", str(run),
                           "--output_dir", str(tmp_path / "run"), "--max_steps", "1"],
                          env=env, timeout=600, capture_output=True, text=True,
                          cwd=ACCELERATE_CONFIGS.parents[1])     # the run's data path
    assert done.returncode != 0
    assert f"is not supported under {engine}" in done.stderr
    assert "examples/accelerate/ddp.yaml" in done.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()
