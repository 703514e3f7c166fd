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


# A tiny token task (tests/harness/oracle/): three-token vocabulary, one-layer model.
TOKEN_TASK = dict(vocab_size=3, response_length=3, prompt_length=2, num_prompts=3,
                  num_heldout=1, hidden_size=8, num_layers=1, warmup_steps=3)

# The finite-sample tests' task: responses of length 2, seed 3.
TINY = dict(vocab_size=3, response_length=2, prompt_length=2, num_prompts=3, num_heldout=1,
            hidden_size=8, num_layers=1, warmup_steps=5)


def token_task():
    """The tiny token task of ``TOKEN_TASK`` (seed 0)."""
    from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task

    return build_token_task(TokenTaskConfig(**TOKEN_TASK), seed=0)


def tiny_finite():
    """(task, capacity norm, log-prob fn over training prompts, θ₀, log π₀, skew counts)."""
    from auxdpo.harness.oracle.capacity import FlatCapacity
    from auxdpo.harness.oracle.designs import design_counts
    from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task

    task = build_token_task(TokenTaskConfig(**TINY), seed=3)
    capacity = FlatCapacity(task.model, "norm")
    fn = task.log_probs_fn(capacity, train_only=True)
    with torch.no_grad():
        logp0 = fn(capacity.theta0)
    counts = design_counts("skew", rho=task.rho(), probs0=logp0.exp(),
                           generator=torch.Generator().manual_seed(0))
    return task, capacity, fn, capacity.theta0, logp0, counts
