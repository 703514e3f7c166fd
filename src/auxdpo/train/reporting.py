"""``report_to`` integrations a user installs as extras, checked when the config is made.

transformers only finds out that TensorBoard or W&B is missing when the trainer builds its
callbacks, and then names neither the package nor how to get it. Here a requested integration
whose package is absent is a one-line ValueError naming the install command (``auxdpo train``
prints it as ``auxdpo train: error: ...`` and exits with code 2).

W&B runs offline (no account, nothing sent) with ``WANDB_MODE=offline``; ``wandb sync`` uploads
such a run later. Metrics reach every integration under TRL's names, with ``train/`` in front
(``train/loss``, ``train/rewards/margins``, ``train/aux/null_residual``, ...).
"""

from __future__ import annotations

__all__ = ["EXTRAS", "check_report_to"]

# integration → (extra of this package, what transformers looks for)
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def _available(integration: str) -> bool:
    from transformers.integrations import is_tensorboard_available, is_wandb_available

    return {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[integration]()


def check_report_to(report_to) -> None:
    """Raise ValueError when an integration in ``report_to`` lacks its package."""
    if report_to is None or report_to in ("none", "all"):
        return  # "all" means "whatever is installed": nothing can be missing
    requested = [report_to] if isinstance(report_to, str) else list(report_to)
    for integration in requested:
        if integration in EXTRAS and not _available(integration):
            extra, package = EXTRAS[integration]
            raise ValueError(f"report_to {integration} needs the {package} package: "
                             f"pip install 'auxdpo[{extra}]' (or pip install {package})")
