"""Matplotlib figures of the lab (Agg backend, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["plot_beta_sweep", "plot_sensitivity"]

_TITLES = {"dpo": "DPO", "ipo": "IPO", "dpop": "DPOP", "auxdpo": "AuxDPO"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_sensitivity(path, grid: torch.Tensor, change: dict[str, torch.Tensor],
                     beta: float) -> Path:
    """One ternary panel per method: Δ expected reward over the (n12, n23, n31) simplex.

    Corners are the count vectors dominated by one pair; red = reward below the base
    policy's, blue = above; the black line is Δ = 0 (where DPO's preference reverses).
    """
    import matplotlib.tri as mtri

    plt = _pyplot()
    # Barycentric → plane: n12 at (0, 0), n23 at (1, 0), n31 at (1/2, √3/2).
    x = (grid[:, 1] + 0.5 * grid[:, 2]).numpy()
    y = (grid[:, 2] * 3 ** 0.5 / 2).numpy()
    tri = mtri.Triangulation(x, y)
    limit = max(float(v.abs().max()) for v in change.values()) or 1.0
    fig, axes = plt.subplots(1, len(change), figsize=(4.2 * len(change), 4.0))
    for ax, (method, values) in zip(axes, change.items()):
        img = ax.tripcolor(tri, values.numpy(), cmap="RdBu", vmin=-limit, vmax=limit,
                           shading="gouraud")
        if float(values.min()) < -1e-12 and float(values.max()) > 1e-12:
            ax.tricontour(tri, values.numpy(), levels=[0.0], colors="k", linewidths=1.2)
        ax.set_title(f"{_TITLES.get(method, method)}")
        for label, (cx, cy), va in (("n12", (0, 0), "top"), ("n23", (1, 0), "top"),
                                    ("n31", (0.5, 3 ** 0.5 / 2), "bottom")):
            ax.annotate(label, (cx, cy), ha="center", va=va, fontsize=9,
                        annotation_clip=False)
        ax.set_xlim(-0.08, 1.08)
        ax.set_ylim(-0.1, 0.98)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.colorbar(img, ax=list(axes), shrink=0.8,
                 label="change in expected reward  $\\pi_\\theta^T r^* - \\pi_0^T r^*$")
    fig.suptitle(f"Proposition 2 instance, beta = {beta:g}: expected-reward change over the "
                 "pair-count simplex (red = worse than base)")
    path = _save(fig, Path(path))
    plt.close(fig)
    return path


def plot_beta_sweep(path, rows: list[dict]) -> Path:
    """Log-log: AuxDPO's relative θ gap and gain shortfall vs β, DPO's shortfall for scale."""
    plt = _pyplot()
    betas = [r["beta"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    series = (("auxdpo_rel_theta_gap", "AuxDPO: |theta - theta_RLHF| / |theta_RLHF - theta0|"),
              ("auxdpo_gain_shortfall", "AuxDPO: 1 - share of RLHF gain"),
              ("dpo_gain_shortfall", "DPO: |1 - share of RLHF gain|"))
    for key, label in series:
        ax.loglog(betas, [max(abs(r[key]), 1e-16) for r in rows], marker="o", label=label)
    ax.set_xlabel("beta")
    ax.set_ylabel("gap to exact RLHF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = _save(fig, Path(path))
    plt.close(fig)
    return path
