"""What stops a training run from going wrong silently, called from one line each in the trainer.

* :func:`check_step_finite`: after each micro-batch's backward, a non-finite loss or gradient
  stops the run with :class:`NonFiniteTrainingError` naming the optimizer step and the rows of
  the batch, before the optimizer (or δ's) step can spread it into the weights and before any
  checkpoint holds it.
* :func:`check_parameters_finite`: the last word before a model is saved.
* :func:`number_rows` / :func:`pop_source_rows`: the rows' numbers in their source file travel
  through TRL's preparation (a column it keeps), so errors name the file's rows.
* :func:`safe_model_init_kwargs`: how a model named by path is loaded (safetensors only; a
  warning naming the folder's Python files when ``trust_remote_code`` is on).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import torch

from auxdpo.errors import AuxdpoError
from auxdpo.train.data import AUX_INDEX, SOURCE_ROW

__all__ = ["NonFiniteTrainingError", "check_parameters_finite", "check_step_finite",
           "number_rows", "pop_source_rows", "remote_code_files", "safe_model_init_kwargs"]

logger = logging.getLogger(__name__)


class NonFiniteTrainingError(AuxdpoError, RuntimeError):
    """The loss, a gradient or a parameter became NaN or infinite; nothing was saved after it."""


def _rows_of(trainer, inputs) -> str:
    if AUX_INDEX not in inputs:
        return ""
    positions = inputs[AUX_INDEX].tolist()
    numbers: Sequence[int] | None = getattr(trainer, "source_rows", {}).get("train")
    rows = [numbers[p] for p in positions] if numbers is not None else [p + 1 for p in positions]
    return f"; batch rows {sorted(rows)}"


def check_step_finite(trainer, model: torch.nn.Module, loss: torch.Tensor, inputs) -> None:
    """Raise :class:`NonFiniteTrainingError` when ``loss`` or a gradient of ``model`` is not
    finite. One device synchronisation per micro-batch (all checks are reduced first)."""
    grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    flags = [torch.isfinite(loss.detach()).all()]
    flags += [torch.isfinite(grad).all() for _, grad in grads]
    if bool(torch.stack([flag.to(flags[0].device) for flag in flags]).all()):
        return
    step = trainer.state.global_step + 1
    if not bool(flags[0]):
        what = f"the loss is {loss.detach().float().mean().item()}"
    else:
        bad = next(name for (name, _), flag in zip(grads, flags[1:]) if not bool(flag))
        what = f"the gradient of {bad} is not finite"
    raise NonFiniteTrainingError(f"training step {step}: {what}{_rows_of(trainer, inputs)}; "
                                 "stopped before the optimizer step (lower learning_rate or "
                                 "beta, or check those rows)")


def check_parameters_finite(model: torch.nn.Module, where: str) -> None:
    """Refuse to save a model holding a NaN or infinite parameter."""
    for name, param in model.named_parameters():
        if param.numel() and not bool(torch.isfinite(param.detach()).all()):
            raise NonFiniteTrainingError(f"not saving {where}: parameter {name} is not finite")


def number_rows(dataset):
    """The dataset with a :data:`SOURCE_ROW` column (1, 2, ... unless it has one)."""
    if SOURCE_ROW in dataset.column_names:
        return dataset
    return dataset.add_column(SOURCE_ROW, list(range(1, len(dataset) + 1)))


def pop_source_rows(dataset):
    """``(dataset without the SOURCE_ROW column, its values)``."""
    if SOURCE_ROW not in dataset.column_names:
        return dataset, None
    return dataset.remove_columns(SOURCE_ROW), list(dataset[SOURCE_ROW])


def remote_code_files(model_path: str) -> list[str]:
    """The ``.py`` files of a local model folder (what ``trust_remote_code`` would run)."""
    if not os.path.isdir(model_path):
        return []
    return sorted(name for name in os.listdir(model_path) if name.endswith(".py"))


def warn_remote_code(model_path: str) -> None:
    """Warn that ``trust_remote_code`` runs the model's own Python code, naming the files."""
    files = remote_code_files(model_path)
    named = (f"{len(files)} file(s) in {model_path}: {', '.join(files)}" if files else
             f"whatever Python files {model_path} ships (none found locally)")
    warnings.warn(f"trust_remote_code is on: loading {model_path} runs {named}; "
                  "run only code you have read", UserWarning, stacklevel=3)


def safe_model_init_kwargs(args, model_path: str) -> dict:
    """``from_pretrained`` keyword arguments for a model named by path: safetensors only.

    ``use_safetensors: false`` in ``model_init_kwargs`` would let a pickled checkpoint run
    code on load, so it is refused rather than honoured.
    """
    init_kwargs = dict(args.model_init_kwargs or {})
    if init_kwargs.get("use_safetensors", True) is not True:
        raise ValueError("model_init_kwargs: use_safetensors cannot be turned off (pickled "
                         "weights can run code when loaded); convert the checkpoint to "
                         "safetensors")
    init_kwargs["use_safetensors"] = True
    init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    if init_kwargs["trust_remote_code"]:
        warn_remote_code(model_path)
    return init_kwargs
