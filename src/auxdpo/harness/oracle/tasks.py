"""Enumerable tasks: every response of every prompt is scored exactly, no sampling.

``tokens`` family: a tiny GPT-2 built locally over a vocabulary of V tokens; prompts are
distinct random token strings of length P; the response set is every token sequence of length
L (|A| = V^L), in ``itertools.product`` order (first token most significant). Sequence
log-probs sum the L token log-probs (DPO's convention). One forward pass over the
S·V^(L−1) sequences "prompt + first L−1 response tokens" gives every response's log-prob: the
last position's next-token distribution covers the V possible final tokens.

The ground-truth reward r*(s, a) is either ``random`` (an i.i.d. N(0, 1) table) or
``structured`` (per-token values, adjacent-pair interactions, a prompt×first-token term and a
small i.i.d. part), standardised to unit standard deviation. Neither is representable by a
small trainable set, which is the point (misspecification needs d ≪ |S|·|A|).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from auxdpo.harness.oracle.capacity import FlatCapacity

__all__ = ["REWARDS", "TokenTask", "TokenTaskConfig", "all_responses", "build_token_task"]

DTYPE = torch.float64
REWARDS = ("structured", "random")


@dataclass
class TokenTaskConfig:
    """Shape of a ``tokens`` task."""

    vocab_size: int = field(default=6, metadata={"help": "V, tokens in the vocabulary"})
    response_length: int = field(default=3, metadata={"help": "L, tokens per response"})
    prompt_length: int = field(default=3, metadata={"help": "P, tokens per prompt"})
    num_prompts: int = field(default=16, metadata={"help": "training prompts (ρ uniform)"})
    num_heldout: int = field(default=4, metadata={"help": "held-out prompts (accuracy only)"})
    hidden_size: int = field(default=32, metadata={"help": "GPT-2 width"})
    num_layers: int = field(default=2, metadata={"help": "GPT-2 blocks"})
    warmup_steps: int = field(default=30, metadata={
        "help": "Adam steps of supervised warm-up towards a random target (0: none)"})
    reward: str = field(default="structured", metadata={"help": f"one of {REWARDS}"})

    def __post_init__(self):
        for name in ("vocab_size", "response_length", "prompt_length", "num_prompts",
                     "hidden_size", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.vocab_size < 2 or self.num_heldout < 0 or self.warmup_steps < 0:
            raise ValueError("vocab_size must be >= 2, num_heldout and warmup_steps >= 0")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        total = self.num_prompts + self.num_heldout
        if total > self.vocab_size ** self.prompt_length:
            raise ValueError(f"{total} distinct prompts do not exist with V={self.vocab_size},"
                             f" P={self.prompt_length}")

    @property
    def num_responses(self) -> int:
        return self.vocab_size ** self.response_length


def all_responses(vocab_size: int, length: int) -> torch.Tensor:
    """Every token sequence of ``length`` over ``vocab_size`` tokens, ``(V^L, L)``, once each."""
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)),
                        dtype=torch.long).reshape(vocab_size ** length, length)


@dataclass
class TokenTask:
    """A built task: prompts, rewards and the policy θ ↦ log π_θ over all prompts."""

    config: TokenTaskConfig
    model: torch.nn.Module
    prompts: torch.Tensor        # (S + H, P) long; the first S are the training prompts
    reward: torch.Tensor         # (S + H, A) float64
    inputs: torch.Tensor         # (N, P + L − 1) long, N = (S + H)·V^(L−1)

    @property
    def num_prompts(self) -> int:
        return self.config.num_prompts

    def rho(self) -> torch.Tensor:
        """ρ over the training prompts (uniform), ``(S,)``."""
        return torch.full((self.num_prompts,), 1.0 / self.num_prompts, dtype=DTYPE)

    def log_probs_fn(self, capacity: FlatCapacity, train_only: bool = False):
        """θ ``(d,)`` ↦ log π_θ(a|s) ``(S + H, A)`` for every prompt and response
        (``(S, A)``, the training prompts only, with ``train_only``)."""
        cfg = self.config
        P, L, V = cfg.prompt_length, cfg.response_length, cfg.vocab_size
        num_all = self.num_prompts if train_only else self.prompts.shape[0]
        inputs = self.inputs[:num_all * V ** (L - 1)]

        def log_probs(theta: torch.Tensor) -> torch.Tensor:
            logits = capacity.logits(theta, inputs, start=P - 1)     # (N, L, V)
            logp = torch.log_softmax(logits, dim=-1)
            if L > 1:
                seen = inputs[:, P:, None]                             # tokens a_1..a_{L−1}
                prefix = logp[:, :L - 1].gather(-1, seen).squeeze(-1).sum(-1)  # (N,)
            else:
                prefix = torch.zeros(inputs.shape[0], dtype=logp.dtype)
            full = prefix[:, None] + logp[:, L - 1]                    # (N, V): + last token
            return full.reshape(num_all, V ** L)

        return log_probs


def _reward_table(cfg: TokenTaskConfig, prompts: torch.Tensor, responses: torch.Tensor,
                  gen: torch.Generator) -> torch.Tensor:
    S, A, V = prompts.shape[0], responses.shape[0], cfg.vocab_size
    normal = lambda *shape: torch.randn(*shape, generator=gen, dtype=DTYPE)  # noqa: E731
    if cfg.reward == "random":
        table = normal(S, A)
    else:
        token_value, pair_value, cross = normal(V), normal(V, V), normal(V, V)
        table = token_value[responses].sum(-1)[None].expand(S, A).clone()
        if responses.shape[1] > 1:
            table += pair_value[responses[:, :-1], responses[:, 1:]].sum(-1)[None]
        table += cross[prompts[:, -1][:, None], responses[None, :, 0]]
        table += 0.5 * normal(S, A)
    return (table - table.mean()) / table.std()


def _warm_up(model: torch.nn.Module, task: TokenTask, steps: int,
             gen: torch.Generator) -> None:
    """Supervised warm-up: fit π to softmax(1.5·z) for a random table z (π₀ not uniform)."""
    if steps == 0:
        return
    capacity = FlatCapacity(model, "full")
    target = torch.log_softmax(1.5 * torch.randn(task.reward.shape, generator=gen,
                                                 dtype=DTYPE), dim=-1)
    fn = task.log_probs_fn(capacity)
    theta = capacity.theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = -(target.exp() * fn(theta)).sum(-1).mean()        # cross-entropy to target
        loss.backward()
        opt.step()
    with torch.no_grad():
        for name, value in capacity.parameters(theta.detach()).items():
            dict(model.named_parameters())[name].copy_(value)


def build_token_task(cfg: TokenTaskConfig, seed: int) -> TokenTask:
    """Model (seeded), prompts, reward table and, if asked, the warm-up; all float64."""
    from auxdpo.train.tiny import build_tiny_model

    gen = torch.Generator().manual_seed(int(seed))
    P, L, V = cfg.prompt_length, cfg.response_length, cfg.vocab_size
    model = build_tiny_model("gpt2", vocab_size=V, num_layers=cfg.num_layers,
                             hidden_size=cfg.hidden_size, num_heads=2,
                             max_positions=P + L, dtype=DTYPE, seed=int(seed)).eval()
    # Eager attention: CPU's fused SDPA kernel has no forward-mode AD (needed for A_θ₀).
    model.set_attn_implementation("eager")
    total = cfg.num_prompts + cfg.num_heldout
    codes = torch.randperm(V ** P, generator=gen)[:total]
    prompts = all_responses(V, P)[codes]                              # distinct prompts
    responses = all_responses(V, L)
    prefixes = all_responses(V, L - 1) if L > 1 else torch.zeros(1, 0, dtype=torch.long)
    inputs = torch.cat([prompts[:, None, :].expand(total, prefixes.shape[0], P),
                        prefixes[None].expand(total, -1, -1)], dim=-1).reshape(-1, P + L - 1)
    reward = _reward_table(cfg, prompts, responses, gen)
    task = TokenTask(cfg, model, prompts, reward, inputs)
    _warm_up(model, task, cfg.warmup_steps, gen)
    return task
