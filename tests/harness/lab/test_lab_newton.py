"""Newton helpers on closed forms: the kinked scalar, smooth batches, the damped minimiser."""


import pytest
import torch

from auxdpo.harness.lab.newton import batched_newton, bracketed_newton, newton_minimize

D64 = torch.float64


def test_newton_helpers_on_closed_forms():
    """Kinked scalar: f(x) = |x − a| + 0.1x² ⇒ x* = a when |0.2a| < 1; smooth batch: quadratics."""
    a = torch.tensor([0.3, -2.0, 7.0], dtype=D64)
    x = bracketed_newton(lambda x: (x - a).abs() + 0.1 * x ** 2, torch.zeros(3, dtype=D64))
    torch.testing.assert_close(x, torch.tensor([0.3, -2.0, 5.0], dtype=D64), rtol=0,
                               atol=1e-11)                   # Newton's stopping tolerance
    target = torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=D64)
    scale = torch.tensor([[1.0, 1e4], [3.0, 0.01]], dtype=D64)
    x, ok = batched_newton(lambda x: (scale * (x - target) ** 2).sum(1)
                           + torch.logsumexp(x - target, dim=1),
                           torch.zeros(2, 2, dtype=D64))
    grad = 2 * scale * (x - target) + torch.softmax(x - target, dim=1)
    assert ok and float(grad.abs().max()) < 1e-10


class _Quadratic:
    """f(x) = ½ xᵀHx − bᵀx, minimised at H⁻¹b."""

    def __init__(self, H, b):
        self.H, self.b = H, b

    def value(self, x):
        return 0.5 * x @ self.H @ x - self.b @ x

    def derivatives(self, x):
        return self.value(x), self.H @ x - self.b, self.H


def test_newton_minimize_solves_a_quadratic_in_one_step():
    H = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=D64)
    b = torch.tensor([1.0, 2.0], dtype=D64)
    result = newton_minimize(_Quadratic(H, b), torch.zeros(2, dtype=D64))
    assert result.status == "converged" and result.iterations <= 2
    # H⁻¹b = [3·1 − 1·2, −1·1 + 4·2] / 11 = [1/11, 7/11]
    torch.testing.assert_close(result.x, torch.tensor([1 / 11, 7 / 11], dtype=D64), rtol=0,
                               atol=1e-12)
    assert result.value == pytest.approx(-0.5 * (1 / 11 + 14 / 11), rel=1e-12)


def test_newton_minimize_reports_the_iteration_cap():
    """f(x) = Σ cosh(x − 3): Newton needs several steps from 0; one is not enough."""

    class Cosh:
        def value(self, x):
            return torch.cosh(x - 3).sum()

        def derivatives(self, x):
            return self.value(x), torch.sinh(x - 3), torch.diag(torch.cosh(x - 3))

    capped = newton_minimize(Cosh(), torch.zeros(1, dtype=D64), max_iter=1)
    assert capped.status == "max_iter" and capped.iterations == 1
    free = newton_minimize(Cosh(), torch.zeros(1, dtype=D64))
    assert free.status == "converged" and free.x.item() == pytest.approx(3.0, abs=1e-10)
    assert free.grad_norm < 1e-10
