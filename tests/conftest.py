"""Suite-wide settings: tiny models run fastest on one thread (and CI has two cores).

Tests that read the project's real rows find them through ``AUXDPO_DATA_DIR``; when it is unset
and ``../shared/data`` sits beside the clone, that folder is used (set before auxdpo loads).
Tests needing the rows skip when they are absent.
"""

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if REAL_DATA.is_dir():
    os.environ.setdefault("AUXDPO_DATA_DIR", str(REAL_DATA))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
