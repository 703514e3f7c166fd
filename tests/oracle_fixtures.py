"""A small log-linear policy class for the oracle's solver tests (tests/harness/oracle/): one linear
layer over fixed random features, so every quantity is cheap and exact in float64."""

import torch

DT = torch.float64


def loglinear(seed=0, S=3, nA=5, d=2, reward_scale=1.0, skew=None):
    """(log_probs(θ) → ``(S, nA)``, θ₀, r*, ρ, pair counts ``(S, nA, nA)`` summing to 1).

    Counts are on-policy, ρ·π₀·π₀; with ``skew`` s they are multiplied by exp(s·(z + zᵀ)), z
    i.i.d. N(0, 1): a design far from on-policy, whose responses' marginal differs from π₀.
    """
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(S, nA, d, generator=gen, dtype=DT)
    theta0 = 0.3 * torch.randn(d, generator=gen, dtype=DT)
    layer = torch.nn.Linear(d, 1, bias=False).to(DT)

    def log_probs(theta):
        logits = torch.func.functional_call(layer, {"weight": theta.view(1, d)}, (features,))
        return torch.log_softmax(logits.squeeze(-1), dim=-1)

    reward = reward_scale * torch.randn(S, nA, generator=gen, dtype=DT)
    rho = torch.full((S,), 1.0 / S, dtype=DT)
    pi0 = log_probs(theta0).exp()
    counts = rho[:, None, None] * pi0[:, :, None] * pi0[:, None, :]
    if skew is not None:
        z = torch.triu(torch.randn(S, nA, nA, generator=gen, dtype=DT), diagonal=1)
        counts = counts * torch.exp(skew * (z + z.transpose(1, 2)))
    counts = counts * (1 - torch.eye(nA, dtype=DT))
    return log_probs, theta0, reward, rho, counts / counts.sum()
