"""The loss core against hand computations, identities and an independent numpy evaluation."""

import math

import numpy as np
import pytest
import torch

from auxdpo.losses import LOSSES, PAPER_METHODS, get_loss, preference_loss


def _np_logsig(x):
    return -np.logaddexp(0.0, -x)


def _np_reference(method, pw, pl, rw, rl, beta, p=None, w=None, lam=50.0, dw=None, dl=None):
    """Independent numpy evaluation of each method (the formulas of the issue, written again)."""
    dw = np.zeros_like(pw) if dw is None else dw
    dl = np.zeros_like(pw) if dl is None else dl

    def one(pw, pl, rw, rl, dw, dl):
        h = (pw - rw) - (pl - rl)
        if method == "dpo":
            return -_np_logsig(beta * h)
        if method == "ipo":
            return (h - 1 / (2 * beta)) ** 2
        if method == "dpop":
            return -_np_logsig(beta * (h - lam * np.maximum(0.0, rw - pw)))
        if method == "auxdpo":
            return -_np_logsig(beta * h + dw - dl)
        raise AssertionError(method)

    out = one(pw, pl, rw, rl, dw, dl)
    if p is not None:
        out = p * out + (1 - p) * one(pl, pw, rl, rw, dl, dw)
    if w is not None:
        out = out * w
    return out


def _kwargs(method, lam, dw, dl):
    if method == "dpop":
        return {"dpop_lambda": lam}
    if method == "auxdpo":
        return {"delta_chosen": dw, "delta_rejected": dl}
    return {}


@pytest.mark.parametrize("method", PAPER_METHODS)
@pytest.mark.parametrize("soft", [False, True])
def test_losses_match_independent_numpy(method, soft):
    rng = np.random.default_rng(0)
    B = 64
    pw, pl, rw, rl = (rng.normal(-20, 5, B) for _ in range(4))
    dw, dl = rng.normal(0, 1, B), rng.normal(0, 1, B)
    p = rng.uniform(0, 1, B) if soft else None
    w = rng.uniform(0, 3, B) if soft else None
    beta, lam = 0.3, 2.5
    t = lambda x: None if x is None else torch.tensor(x, dtype=torch.float64)  # noqa: E731
    out = get_loss(method)(t(pw), t(pl), t(rw), t(rl), beta=beta, pref_prob=t(p), weight=t(w),
                           **_kwargs(method, lam, t(dw), t(dl)))
    expected = _np_reference(method, pw, pl, rw, rl, beta, p, w, lam, dw, dl)
    np.testing.assert_allclose(out.losses.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.chosen_rewards.numpy(), beta * (pw - rw), rtol=1e-12)
    np.testing.assert_allclose(out.rejected_rewards.numpy(), beta * (pl - rl), rtol=1e-12)


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("method", PAPER_METHODS)
def test_loss_at_reference(method, beta):
    """θ = θ₀ makes every log-ratio 0: log 2 for the logistic losses, (1/(2β))² for IPO."""
    logps = torch.tensor([-3.0, -17.5, -0.25], dtype=torch.float64)
    other = torch.tensor([-8.0, -2.5, -40.0], dtype=torch.float64)
    out = preference_loss(method, logps, other, logps, other, beta=beta)
    expected = 1 / (4 * beta**2) if method == "ipo" else math.log(2)
    torch.testing.assert_close(out.losses, torch.full((3,), expected, dtype=torch.float64))


def test_hand_computed_values():
    """β = 0.5, h = (−1 − −2) − (−3 − −2) = 2.

    DPO  = −log σ(1)       = log(1 + e^−1) = 0.31326168751822286
    IPO  = (2 − 1)²        = 1
    DPOP, λ = 3: penalty max(0, −2 − −1) = 0, so DPOP = DPO; with π(a_w) = −2.5 the penalty is
         max(0, −2 − −2.5) = 0.5, h = 0.5, margin 0.5·(0.5 − 3·0.5) = −0.5
         → log(1 + e^0.5) = 0.9740769841801067
    AuxDPO, δ_w − δ_l = 1: −log σ(1 + 1) = log(1 + e^−2) = 0.12692801104297263
    """
    f64 = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    pw, pl, rw, rl = f64(-1.0), f64(-3.0), f64(-2.0), f64(-2.0)
    assert preference_loss("dpo", pw, pl, rw, rl, beta=0.5).losses.item() == pytest.approx(
        0.31326168751822286, rel=1e-13)
    assert preference_loss("ipo", pw, pl, rw, rl, beta=0.5).losses.item() == pytest.approx(1.0)
    assert preference_loss("dpop", pw, pl, rw, rl, beta=0.5, dpop_lambda=3.0).losses.item() == \
        pytest.approx(0.31326168751822286, rel=1e-13)
    assert preference_loss("dpop", f64(-2.5), pl, rw, rl, beta=0.5, dpop_lambda=3.0
                           ).losses.item() == pytest.approx(0.9740769841801067, rel=1e-13)
    out = preference_loss("auxdpo", pw, pl, rw, rl, beta=0.5, delta_chosen=f64(0.25),
                          delta_rejected=f64(-0.75))
    assert out.losses.item() == pytest.approx(0.12692801104297263, rel=1e-13)


def test_auxdpo_with_zero_offsets_is_dpo_including_gradients():
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(16, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(4)]
    aux = preference_loss("auxdpo", *x, beta=0.2, delta_chosen=torch.zeros(16, dtype=torch.float64),
                          delta_rejected=torch.zeros(16, dtype=torch.float64)).losses.sum()
    ga = torch.autograd.grad(aux, x)
    dpo = preference_loss("dpo", *x, beta=0.2).losses.sum()
    gd = torch.autograd.grad(dpo, x)
    torch.testing.assert_close(aux, dpo)
    for a, b in zip(ga, gd):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method", PAPER_METHODS)
def test_soft_label_endpoints_and_symmetry(method):
    """p = 1 is the hard label; p = 0 is the hard label with the responses swapped."""
    g = torch.Generator().manual_seed(2)
    pw, pl, rw, rl = (torch.randn(8, dtype=torch.float64, generator=g) for _ in range(4))
    kw = {"dpop_lambda": 1.5} if method == "dpop" else {}
    one = torch.ones(8, dtype=torch.float64)
    hard = preference_loss(method, pw, pl, rw, rl, beta=0.7, **kw).losses
    torch.testing.assert_close(preference_loss(method, pw, pl, rw, rl, beta=0.7, pref_prob=one,
                                               **kw).losses, hard)
    swapped = preference_loss(method, pl, pw, rl, rw, beta=0.7, **kw).losses
    torch.testing.assert_close(preference_loss(method, pw, pl, rw, rl, beta=0.7,
                                               pref_prob=0 * one, **kw).losses, swapped)


def test_population_dpo_minimised_at_true_margin():
    """Soft-label DPO (Eq. 3) is minimised where β·h equals the true reward gap r*_w − r*_l."""
    gap = torch.tensor([0.7, -1.3, 2.0], dtype=torch.float64)
    p = torch.sigmoid(gap)
    h = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    beta = 4.0
    zero = torch.zeros(3, dtype=torch.float64)
    loss = preference_loss("dpo", h, zero, zero, zero, beta=beta, pref_prob=p).losses.sum()
    (grad,) = torch.autograd.grad(loss, h)
    # gradient at h: β·(σ(βh) − p); solve exactly and verify stationarity
    h_star = (gap / beta).clone().requires_grad_(True)
    loss_star = preference_loss("dpo", h_star, zero, zero, zero, beta=beta, pref_prob=p)
    (g_star,) = torch.autograd.grad(loss_star.losses.sum(), h_star)
    torch.testing.assert_close(grad, beta * (0.5 - p))
    torch.testing.assert_close(g_star, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_any_float_dtype(dtype):
    x = torch.tensor([-1.0, -2.0], dtype=dtype)
    for method in LOSSES:
        out = preference_loss(method, x, x, x, x, beta=1.0)
        assert out.losses.dtype == dtype


def test_weight_scales_losses():
    x = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    y = torch.tensor([-3.0, -0.5], dtype=torch.float64)
    w = torch.tensor([2.0, 0.0], dtype=torch.float64)
    base = preference_loss("dpo", x, y, y, x, beta=1.0).losses
    torch.testing.assert_close(preference_loss("dpo", x, y, y, x, beta=1.0, weight=w).losses,
                               base * w)


def test_bad_input_is_refused_clearly():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown method 'kto'"):
        get_loss("kto")
    with pytest.raises(ValueError, match="beta must be a positive"):
        preference_loss("dpo", x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="ref_rejected_logps has shape"):
        preference_loss("dpo", x, x, x, torch.zeros(4), beta=1.0)
    with pytest.raises(ValueError, match=r"pref_prob must lie in \[0, 1\]"):
        preference_loss("dpo", x, x, x, x, beta=1.0, pref_prob=torch.tensor([0.5, 1.5, 0.0]))
    with pytest.raises(ValueError, match=r"pref_prob must lie in \[0, 1\]"):
        preference_loss("dpo", x, x, x, x, beta=1.0, pref_prob=torch.tensor([0.5, float("nan"), 0]))
    with pytest.raises(ValueError, match="dpop_lambda"):
        preference_loss("dpop", x, x, x, x, beta=1.0, dpop_lambda=-1.0)
    with pytest.raises(ValueError, match="delta_chosen and delta_rejected"):
        preference_loss("auxdpo", x, x, x, x, beta=1.0, delta_chosen=torch.zeros(2))
