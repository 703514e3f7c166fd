"""Two-stage RLHF's first stage: a Bradley–Terry reward model from the task's own network family.

The reward model is the task's tiny GPT-2 *body* (a copy, all parameters trainable) with a
scalar linear head read at the last position of "prompt + response" (``P + L`` tokens, no
padding: every scored sequence has the same length). It is fitted by full-batch Adam on the
Bradley–Terry logistic loss

    −Σ_i w_i [p_i log σ(r̂(s_i, a_i) − r̂(s_i, a'_i)) + (1 − p_i) log σ(r̂(s_i, a'_i) − r̂(s_i, a_i))]

(hard labels: p = 1 for the recorded winner), with early stopping on a held-out share of the
pairs: a finite, mostly separable pair set makes the unregularised maximum-likelihood r̂
diverge, so the step with the lowest validation loss is kept. r̂ is identified only up to a
per-prompt constant, which the KL-regularised policy optimisation ignores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from auxdpo.harness.oracle.metrics import pair_agreement
from auxdpo.harness.oracle.sampling import DTYPE, PairSample
from auxdpo.harness.oracle.tasks import all_responses

__all__ = ["RewardFit", "RewardModel", "fit_reward_model", "fit_reward_table", "scored_inputs"]


def scored_inputs(prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Every "prompt + response" string, ``(S·A, P + L)``, prompt-major (row s·A + a)."""
    S, A = prompts.shape[0], responses.shape[0]
    return torch.cat([prompts[:, None, :].expand(S, A, -1),
                      responses[None].expand(S, -1, -1)], dim=-1).reshape(S * A, -1)


class RewardModel(torch.nn.Module):
    """r̂(s, a): a causal LM's body (deep copy) + a linear head on the last position.

    Args:
        lm: a Hugging Face causal LM (its ``base_model`` is the body; not modified).
        head_seed: seed of the head's N(0, 1/hidden) initialisation; ``None`` starts at 0.
    """

    def __init__(self, lm: torch.nn.Module, head_seed: int | None = None):
        super().__init__()
        self.body = copy.deepcopy(lm.base_model)
        self.body.requires_grad_(True)
        hidden = self.body.config.hidden_size
        dtype = next(self.body.parameters()).dtype
        self.head = torch.nn.Linear(hidden, 1, dtype=dtype)
        with torch.no_grad():
            self.head.bias.zero_()
            if head_seed is None:
                self.head.weight.zero_()
            else:
                gen = torch.Generator().manual_seed(int(head_seed))
                self.head.weight.copy_(torch.randn(1, hidden, generator=gen, dtype=dtype)
                                       / hidden ** 0.5)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of ``input_ids`` ``(N, T)`` (unpadded, read at position T − 1)."""
        mask = torch.ones_like(input_ids)
        hidden = self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self.head(hidden[:, -1]).squeeze(-1)

    def table(self, inputs: torch.Tensor, num_prompts: int) -> torch.Tensor:
        """r̂ as an ``(S, A)`` table from :func:`scored_inputs` rows ``(S·A, P + L)``."""
        return self(inputs).reshape(num_prompts, -1)


@dataclass
class RewardFit:
    """The fitted model, its best validation loss, the step it came from, steps run."""

    model: RewardModel
    val_loss: float
    best_step: int
    steps: int


def _bt_loss(scores: torch.Tensor, first, second, pref_prob, weight) -> torch.Tensor:
    margin = scores[first] - scores[second]
    losses = -(pref_prob * F.logsigmoid(margin) + (1 - pref_prob) * F.logsigmoid(-margin))
    return (weight * losses).sum() / weight.sum()          # Bradley–Terry negative log-lik.


def fit_reward_model(model: RewardModel, inputs: torch.Tensor, num_prompts: int,
                     state: torch.Tensor, first: torch.Tensor, second: torch.Tensor, *,
                     pref_prob: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                     steps: int = 300, lr: float = 3e-3, val_fraction: float = 0.1,
                     eval_every: int = 5, seed: int = 0) -> RewardFit:
    """Fit ``model`` in place on pairs (s, a ≻ a' with probability p), full-batch Adam.

    Args:
        inputs: :func:`scored_inputs` of the training prompts ``(S·A, P + L)``.
        state, first, second: ``(n,)`` long: the prompt and the two responses of each pair.
        pref_prob: ``(n,)`` probability that ``first`` wins (default 1: hard labels).
        weight: ``(n,)`` per-pair weights (default 1).
        val_fraction: share of pairs held out for early stopping (0: keep the last step).

    Only the distinct (prompt, response) strings of the pairs are scored at each step.
    """
    n = state.numel()
    dtype = next(model.parameters()).dtype
    p = torch.ones(n, dtype=dtype) if pref_prob is None else pref_prob.to(dtype)
    w = torch.ones(n, dtype=dtype) if weight is None else weight.to(dtype)
    if not 0 <= val_fraction < 1 or steps < 1:
        raise ValueError(f"need 0 <= val_fraction < 1 and steps >= 1, got {val_fraction}, {steps}")
    num_actions = inputs.shape[0] // num_prompts
    codes, where = torch.unique(torch.cat([state * num_actions + first,
                                           state * num_actions + second]), return_inverse=True)
    where_first, where_second = where[:n], where[n:]          # positions in the scored rows
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_val = int(round(val_fraction * n)) if n > 1 else 0
    val, train = order[:n_val], order[n_val:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    for step in range(1, steps + 1):
        opt.zero_grad()
        scores = model(inputs[codes])
        _bt_loss(scores, where_first[train], where_second[train], p[train], w[train]).backward()
        opt.step()
        if n_val and (step % eval_every == 0 or step == steps):
            with torch.no_grad():
                value = float(_bt_loss(model(inputs[codes]), where_first[val],
                                       where_second[val], p[val], w[val]))
            if value < best[0]:
                best = (value, step, copy.deepcopy(model.state_dict()))
    if not n_val:
        return RewardFit(model, float("nan"), steps, steps)
    model.load_state_dict(best[2])
    return RewardFit(model, best[0], best[1], steps)


def fit_reward_table(config, task, sample: PairSample, seed: int) -> tuple[torch.Tensor, dict]:
    """Two-stage RLHF's first stage: r̂ ``(S + H, A)`` from a Bradley–Terry reward model
    fitted on ``sample`` (training prompts only), and the fit's statistics."""
    finite, cfg, S = config.finite, task.config, task.num_prompts
    responses = all_responses(cfg.vocab_size, cfg.response_length)
    inputs = scored_inputs(task.prompts, responses)
    model = RewardModel(task.model)
    fit = fit_reward_model(model, inputs[:S * responses.shape[0]], S, sample.state,
                           sample.chosen, sample.rejected, steps=finite.rm_steps, lr=finite.rm_lr,
                           val_fraction=finite.rm_val_fraction, seed=seed)
    with torch.no_grad():
        r_hat = model.table(inputs, task.prompts.shape[0]).to(DTYPE)
    return r_hat, {"rm_val_loss": fit.val_loss, "rm_best_step": fit.best_step,
                   "rm_agreement": pair_agreement(task.reward, r_hat)}
