"""Write the install lock (``requirements/lock.txt``) from the environment that runs this script.

    python scripts/write_lock.py --out requirements/lock.txt     # what `make lock` runs

The lock pins, at the versions installed here, every package that
``auxdpo[train,dev,tensorboard,wandb]`` needs (its dependency closure read from the installed
packages' metadata: ``pip freeze`` restricted to what auxdpo uses, so a stray package in the
environment is not pinned). Left out: auxdpo itself; torch and what only torch needs (the build
comes from ``TORCH_SPEC``, CPU or CUDA); packages only a GPU build needs (``nvidia-*``,
``triton``); extras that are not installed (deepspeed). ``make`` installs with ``pip install
-c requirements/lock.txt``, so the lock constrains versions and installs nothing by itself.

The dependencies' own markers are evaluated for this interpreter: packages needed only on
other Pythons or platforms are not pinned (they resolve within pyproject's ranges there). The
train extra needs Python >= 3.11 (TRL 1.16), so the lock is written and used on 3.11+.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import platform
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "auxdpo"
EXTRAS = ("train", "dev", "tensorboard", "wandb")
LEAVES = {"torch"}                    # pinned by TORCH_SPEC; its own dependencies come with it
GPU_ONLY = ("nvidia-", "triton")      # name prefixes of packages only CUDA builds pull in


def closure(project: str = PROJECT, extras=EXTRAS) -> dict[str, str]:
    """Canonical name → installed version of every package ``project[extras]`` needs, through
    the installed metadata (markers evaluated here; ``LEAVES`` not descended into)."""
    extras_of: dict[str, set[str]] = {}
    todo = [(project, set(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in extras_of and wanted <= extras_of[key]:
            continue
        extras_of.setdefault(key, set()).update(wanted)
        if key in LEAVES:
            continue
        dist = metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                    req.marker.evaluate({"extra": extra}) for extra in extras_of[key] or {""}):
                continue
            todo.append((req.name, set(req.extras)))
    return {key: metadata.version(key) for key in extras_of}


def lock_lines(pins: dict[str, str]) -> list[str]:
    """The lock's requirement lines, sorted by name, without auxdpo, LEAVES and GPU-only
    packages."""
    lines = []
    for key in sorted(pins):
        if key == PROJECT or key in LEAVES or key.startswith(GPU_ONLY):
            continue
        lines.append(f"{key}=={pins[key]}")
    return lines


def header() -> list[str]:
    torch = metadata.version("torch") if _installed("torch") else "not installed"
    return ["# Versions `make` installs (pip install -c requirements/lock.txt): the tested set.",
            "# Regenerate with `make lock` (a fresh resolution within pyproject.toml's ranges),",
            "# then `make test`. Written by scripts/write_lock.py from Python "
            f"{platform.python_version()} on {sys.platform} ({platform.machine()}), "
            f"torch {torch}.",
            "# Not pinned: auxdpo, torch (TORCH_SPEC) and what only torch needs, GPU-only "
            "packages, deepspeed."]


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "requirements" / "lock.txt"),
                        help="lock file to write (default: requirements/lock.txt)")
    args = parser.parse_args(argv)
    text = "\n".join(header() + lock_lines(closure())) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
