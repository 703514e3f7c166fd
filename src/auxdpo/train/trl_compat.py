"""Drop-in compatibility with TRL 1.16's ``DPOTrainer``: configs, loss options, data checks.

* :func:`aux_config_of`: ``args=None`` (:func:`default_config`) and a plain ``DPOConfig``
  (:func:`as_aux_config`) become an ``AuxDPOConfig``.
* :func:`resolve_loss_options`, :func:`build_objective`, :func:`objective_terms`,
  :data:`TRL_LOSS_TYPES`: TRL's loss options, from :mod:`auxdpo.train.trl_losses` (which
  :mod:`auxdpo.train.config` imports; this module imports the config, so the two stay apart).
* :func:`check_train_dataset`: streaming and vision-language data, refused where they cannot
  work, before TRL touches them.
"""

from __future__ import annotations

import logging
from dataclasses import fields

from auxdpo.train.trl_losses import (
    TRL_LOSS_TYPES,
    build_objective,
    loss_types_of,
    method_of,
    objective_terms,
    resolve_loss_options,
)

__all__ = ["TRL_LOSS_TYPES", "as_aux_config", "aux_config_of", "build_objective",
           "check_train_dataset", "default_config", "objective_terms", "resolve_loss_options"]

logger = logging.getLogger(__name__)


def default_config(model):
    """TRL's ``args=None`` default: a config named after the model, ``<name>-AuxDPO``."""
    from trl.trainer.utils import get_config_model_id

    from auxdpo.train.config import AuxDPOConfig

    name = model if isinstance(model, str) else get_config_model_id(model.config)
    return AuxDPOConfig(output_dir=f"{(name or 'model').split('/')[-1]}-AuxDPO")


def aux_config_of(args, model):
    """The trainer's config: ``None`` → :func:`default_config`, a plain ``DPOConfig`` →
    :func:`as_aux_config`, an ``AuxDPOConfig`` as given."""
    from trl import DPOConfig

    from auxdpo.train.config import AuxDPOConfig

    if args is None:
        return default_config(model)
    if isinstance(args, AuxDPOConfig):
        return args
    if isinstance(args, DPOConfig):
        return as_aux_config(args)
    raise ValueError(f"args must be an AuxDPOConfig or a trl.DPOConfig, got "
                     f"{type(args).__name__}")


def as_aux_config(args):
    """An ``AuxDPOConfig`` with every ``DPOConfig`` field of ``args``; method from loss_type."""
    from trl import DPOConfig

    from auxdpo.train.config import AuxDPOConfig

    values = {f.name: getattr(args, f.name) for f in fields(DPOConfig) if f.init}
    method = method_of(loss_types_of(args))
    logger.warning("AuxDPOTrainer: converted DPOConfig to AuxDPOConfig(method=%r, loss_type=%s)",
                   method, loss_types_of(args))
    return AuxDPOConfig(**values, method=method)


def check_train_dataset(dataset, config) -> None:
    """Refuse, before TRL prepares it, data this trainer cannot train on. Where TRL 1.16's
    ``DPOTrainer`` refuses the same thing, the message starts with TRL's words (so that
    ``pytest.raises(match=...)`` written for TRL matches ours), then says why here."""
    from datasets import Dataset, IterableDataset

    if dataset is None:
        raise ValueError("`train_dataset` is required")
    if isinstance(dataset, IterableDataset):
        # TRL's refusal first: a stream with precomputed log-probs is refused by both trainers
        if config.precompute_ref_log_probs:
            raise ValueError("`precompute_ref_log_probs=True` is not supported with "
                             "IterableDataset (the reference log-probs are stored as columns "
                             "of the data). Please use a map-style Dataset or set "
                             "`precompute_ref_log_probs=False`.")
        if config.method == "auxdpo":
            raise ValueError("method auxdpo needs a map-style datasets.Dataset, not an "
                             "IterableDataset: each training pair owns offsets δ addressed by its "
                             "row position, and the null-space state u = A·δ is computed over the "
                             "whole set before training; materialise the stream (e.g. "
                             "Dataset.from_generator or Dataset.from_list(list(stream.take(n)))), "
                             "or train method dpo, ipo or dpop on the stream")
        columns = set(next(iter(dataset)))
    elif not isinstance(dataset, Dataset):
        raise TypeError(f"`train_dataset` must be a `Dataset` or `IterableDataset`, got "
                        f"`{type(dataset).__name__}`.")
    else:
        columns = set(dataset.column_names or ())
    vision = sorted(columns & {"image", "images"})
    if vision:
        raise ValueError(f"The dataset appears to be vision-related (contains {vision}), but "
                         "AuxDPOTrainer trains text-only causal LMs, not a vision-language "
                         "model (its log-probs, capacity presets and offsets' products take "
                         "text only); use trl's DPOTrainer with a processor for these rows")
