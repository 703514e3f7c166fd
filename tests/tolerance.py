"""Float tolerances for tests that compare two computed paths, scaled to what is compared.

The rule (docs/architecture.md, "Test tolerances"): two floating-point paths that compute the
same quantity differ by round-off, and round-off of a sum, a matmul or an optimizer step is
relative to the size of the *summands*, not to the elementwise result (an entry that cancels
to ~0 still carries the error of its O(1) terms). So a comparison uses

    atol = ops * finfo(dtype).eps * scale,        rtol = 0,

with ``scale`` = max |expected|, |actual| over the tensor(s) compared (or a norm product
passed explicitly for residuals such as ``A @ basis``, or 1 for quantities that are O(1) by
construction) and ``ops`` the number of chained roundings allowed, about 100 times what was
measured: 100 for a closed form or one forward pass, 1e3 for Jacobian products and
projections, 1e4 for a few float64 optimizer steps, 1e5 for a trainer run whose two paths
round differently (Adam's m/√v divides round-off by small gradients), 1e6 across processes.
Even 1e6 is 2e-10 relative in float64, far below a real bug (> 1e-6). Never a fixed tiny
``atol``: how the last bits fall depends on the CPU's kernels (Intel and AMD differ), so
``atol=1e-14`` on an O(1) tensor tests the machine, not the code.

Bit-exact checks (``atol=0``) stay only where the claim is "the same operations in the same
order", and say so. Hand-computed scalars use ``pytest.approx(..., rel=1e-13)`` (a few hundred
ulps). Tolerances of iterative solvers (Newton, L-BFGS) and of finite differences are
convergence tolerances, not round-off, and stay fixed per solver.

``TOL_REPORT=<file>`` appends, for every ``assert_close``, the number of roundings the
comparison actually needed: how the ``ops`` above were measured.
"""

from __future__ import annotations

import os
import traceback

import torch


def _eps(*values) -> float:
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return torch.finfo(value.dtype).eps
    return torch.finfo(torch.float64).eps


def _max_abs(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().abs().max()) if value.numel() else 0.0
    return abs(float(value))


def roundoff(*values, ops: float, scale: float | None = None, dtype=None) -> float:
    """``ops`` roundings of ``dtype`` (default: that of ``values``, else float64) at ``scale``
    (default: max |values|)."""
    if scale is None:
        scale = max((_max_abs(v) for v in values), default=1.0)
    eps = torch.finfo(dtype).eps if dtype is not None else _eps(*values)
    return ops * eps * scale


def assert_close(actual, expected, *, ops: float, scale: float | None = None, dtype=None,
                 msg: str | None = None) -> None:
    """``actual`` equals ``expected`` up to ``ops`` roundings at the tensors' own scale
    (``dtype``: the precision of the less precise path, when it is not the tensors')."""
    expected = torch.as_tensor(expected, dtype=actual.dtype if isinstance(
        actual, torch.Tensor) else None)
    actual = torch.as_tensor(actual, dtype=expected.dtype)
    atol = roundoff(actual, expected, ops=ops, scale=scale, dtype=dtype)
    if os.environ.get("TOL_REPORT"):
        _report(actual, expected, ops, atol, os.environ["TOL_REPORT"])
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol,
                               msg=None if msg is None else lambda text: f"{msg}: {text}")


def _report(actual, expected, ops, atol, path) -> None:
    diff = float((actual - expected).abs().max()) if actual.numel() else 0.0
    needed = diff / atol * ops if atol else (float("inf") if diff else 0.0)
    caller = traceback.extract_stack()[-3]
    with open(path, "a") as out:
        out.write(f"{caller.filename}:{caller.lineno} ops={ops:g} needed={needed:.3g}\n")
