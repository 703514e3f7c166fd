"""Trainer-level run for tests/offsets/test_offsets_collectives.py, launched by ``torchrun`` or
``accelerate launch --config_file examples/accelerate/ddp_cpu.yaml`` (W processes) or plain
``python`` (1 process): AuxDPOTrainer on a tiny float64 GPT-2 for each listed
method/mode, the GLOBAL batch fixed (per-process batch = global / W), then rank 0 saves the
final parameters, δ and u to ``<out>/<name>.pt``. ``--global-batch`` counts one micro-step
of all processes; ``--set gradient_accumulation_steps=K`` multiplies the optimizer's batch.

    python tests/dist_train.py OUT [--steps 4] [--global-batch 8] [--save-steps 0]
        [--resume OUT_OF_AN_EARLIER_RUN [--resume-step 2]] [--runs dpo,global,batch]
        [--data SAVED_DATASET] [--init SAVED_MODEL] [--gpu] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "train"))

import datasets  # noqa: E402
import torch  # noqa: E402
import train_helpers as H  # noqa: E402

from auxdpo.offsets.collectives import rank, world_size  # noqa: E402
from auxdpo.train.trainer import AuxDPOTrainer, PathOptions  # noqa: E402

# train_helpers disables the datasets cache. TRL's precompute_ref_log_probs writes the
# reference log-probs once (rank 0) beside the dataset's cache files and every rank reads
# them back: that needs the cache on and a dataset stored on disk (``--data``); an in-memory
# dataset would put the file in a per-process temporary folder.
datasets.enable_caching()

# The exactness runs use the exact JVP (PathOptions(jvp="forward")): with the default difference JVP
# each process takes its own step size, and the runs then agree to the quotient's error
# (≈ 1e-7 in float64), not to round-off; "global_fd" checks that level.
# The global, batch and projection runs put a strong prior on δ (σ = 0.3, τ/n ≈ 0.7); the
# others run with the default σ.
RUNS = {
    "dpo": {"method": "dpo"},
    "global": {"method": "auxdpo", "aux_constraint": "global", "lambda_null": 5.0,
               "delta_lr": 0.05, "jvp": "forward", "aux_delta_scale": 0.3},
    "global_fd": {"method": "auxdpo", "aux_constraint": "global", "lambda_null": 5.0,
                  "delta_lr": 0.05, "jvp": "finite-difference"},
    "batch": {"method": "auxdpo", "aux_constraint": "batch", "lambda_null": 5.0,
              "lambda_amp": 0.1, "delta_lr": 0.05, "jvp": "forward",
              "aux_delta_scale": 0.3},
    "global_precomputed": {"method": "auxdpo", "aux_constraint": "global", "lambda_null": 5.0,
                           "delta_lr": 0.05, "precompute_ref_log_probs": True,
                           "jvp": "forward"},
    # Only the final norm's weight trains: d = 16 < 2n = 32, so A has a null space of
    # dimension ≥ 16 and δ = Γc really moves (with capacity full, 2n < d: dimension 0).
    "projection": {"method": "auxdpo", "aux_constraint": "projection",
                   "capacity": r"regex:ln_f\.weight$", "delta_lr": 0.05,
                   "aux_delta_scale": 0.3},
}
N_ROWS = 16


def _world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _engine(trainer) -> str:
    """What accelerate really set up: ``DDP``, ``NO`` (1 process) or ``DEEPSPEED zero<k>``."""
    kind = trainer.accelerator.distributed_type.value
    plugin = trainer.accelerator.state.deepspeed_plugin
    if plugin is not None:
        return f"DEEPSPEED zero{plugin.zero_stage}"
    return "DDP" if kind.startswith("MULTI_") else kind


def _initial_model(folder: str | None):
    """The tiny float64 GPT-2, or the same weights saved in ``folder`` (``--init``). Under
    ZeRO-3, transformers builds a model from its config inside ``zero.Init``, which draws other
    initial weights than one process does; loading saved weights gives every launch the same."""
    if folder is None:
        return H.model()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64)


def train_one(name: str, out: Path, args) -> None:
    per_device = args.global_batch // _world()
    save = ({"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps
            else {"save_strategy": "no"})
    values = {**RUNS[name], **dict(args.set)}
    options = PathOptions(jvp=values.pop("jvp", None))
    config = H.config(out / name, per_device_train_batch_size=per_device,
                      max_steps=args.steps, learning_rate=5e-3, use_cpu=not args.gpu,
                      **save, **values)
    train = datasets.load_from_disk(args.data) if args.data else H.dataset(N_ROWS)
    trainer = AuxDPOTrainer(_initial_model(args.init), args=config, train_dataset=train,
                            processing_class=H.tokenizer(), path_options=options)
    resume = None
    if args.resume:
        resume = str(Path(args.resume) / name / f"checkpoint-{args.resume_step}")
    trainer.train(resume_from_checkpoint=resume)
    if rank() == 0:
        model = trainer.accelerator.unwrap_model(trainer.model)
        result = {"params": {k: v.detach().cpu().clone() for k, v in model.named_parameters()},
                  "world_size": world_size(), "engine": _engine(trainer)}
        if trainer.offsets is not None:
            result["delta"] = trainer.offsets.table().cpu()
            if trainer.offsets.u is not None:
                result["u"] = trainer.offsets.u.cpu()
            if getattr(trainer.offsets, "basis", None) is not None:
                result["null_dim"] = trainer.offsets.basis.shape[1]
        torch.save(result, out / f"{name}.pt")


def _key_value(text: str) -> tuple[str, object]:
    import ast

    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--save-steps", type=int, default=0)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--resume-step", type=int, default=2)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--gpu", action="store_true", help="train on the GPUs (NCCL)")
    parser.add_argument("--set", type=_key_value, action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field (value: Python "
                        "literal), e.g. --set max_grad_norm=0")
    parser.add_argument("--init", default=None, help="a folder of initial weights saved with "
                        "save_pretrained (the same model on every launcher, ZeRO-3 included)")
    parser.add_argument("--data", default=None, help="a dataset saved with save_to_disk "
                        "(needed by precompute_ref_log_probs under several processes)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.runs.split(","):
        train_one(name, out, args)


if __name__ == "__main__":
    main()
