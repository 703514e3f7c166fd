"""The install lock ``requirements/lock.txt`` and ``scripts/write_lock.py``, which writes it.

The lock is what ``make`` installs (``pip install -c requirements/lock.txt``): every
dependency of ``auxdpo[train,dev,tensorboard,wandb]`` at one tested version. Checked here
against pyproject.toml's ranges, for what it must leave out (auxdpo, torch, GPU-only packages,
deepspeed), and that the Makefile uses it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
EXTRAS = ("train", "dev", "tensorboard", "wandb")
PIN = re.compile(r"^([a-z0-9][a-z0-9-]*)==([^\s;]+)$")


def _script():
    spec = importlib.util.spec_from_file_location("write_lock", ROOT / "scripts" / "write_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not a canonical name==version pin: {line!r}"
        assert match.group(1) not in pins, f"pinned twice: {line!r}"
        pins[match.group(1)] = match.group(2)
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in EXTRAS:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_lock_pins_every_direct_dependency_inside_pyproject_ranges():
    pins = _pins()
    assert list(pins) == sorted(pins)
    for req in _project_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{name} is not pinned"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), \
            f"{name}=={pins[name]} is outside pyproject's {req.specifier}"


def test_lock_leaves_out_auxdpo_torch_gpu_only_packages_and_deepspeed():
    pins = _pins()
    assert not {"auxdpo", "torch", "deepspeed", "triton"} & set(pins)
    assert not [name for name in pins if name.startswith(("nvidia-", "cuda-"))]


def test_makefile_installs_with_the_lock_and_reinstalls_when_it_changes():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^LOCK \?= requirements/lock\.txt$", makefile, re.M)
    assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(LOCK\)$", makefile, re.M)
    assert re.search(r"pip install -q -c \$\(LOCK\) -e \"\.\[\$\(EXTRAS\)\]\"", makefile)
    assert re.search(r"^EXTRAS := train,dev,tensorboard,wandb$", makefile, re.M)
    assert re.search(r"^lock:$", makefile, re.M) and "scripts/write_lock.py" in makefile


def test_lock_lines_drop_what_the_lock_must_not_pin():
    script = _script()
    pins = {"auxdpo": "0.1.0", "torch": "2.13.0+cpu", "nvidia-cublas": "13.1.1.3",
            "triton": "3.7.1", "numpy": "2.4.6", "accelerate": "1.16.0"}
    assert script.lock_lines(pins) == ["accelerate==1.16.0", "numpy==2.4.6"]


def test_closure_of_the_installed_project_covers_its_requirements():
    """Run in the test environment: the closure reaches every direct requirement, stops at
    torch (its own dependencies come with the TORCH_SPEC build), and holds installed versions."""
    from importlib.metadata import version

    closure = _script().closure()
    assert {canonicalize_name(req.name) for req in _project_requirements()} <= set(closure)
    assert closure["transformers"] == version("transformers")
    assert "sympy" not in closure  # needed only by torch
