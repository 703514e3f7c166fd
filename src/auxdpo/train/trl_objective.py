"""TRL's per-token extras around our losses: LD-DPO log-probs, WPO weights, the SFT term, the
f-divergence scores, combinations of losses, and the metrics TRL's DPOTrainer logs.

Everything here runs only when a run asks for it (``TRLObjective``) or is a handful of
reductions over tensors the forward pass already produced (``log_trl_metrics``), so the
default ``dpo`` step is the same computation as before plus TRL's own metric reductions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from auxdpo.losses import LOSSES, PreferenceLoss, f_divergence_score

__all__ = ["AVERAGED", "MARGIN_LOSSES", "TRLObjective", "TokenStats", "ld_weighted_logps",
           "log_preference_metrics", "log_trl_metrics"]

# Losses that depend on the log-probs only through the margin h = s_w − s_l of the two scores
# s = log π/π_ref: an f-divergence replaces s by f'(π/π_ref), and AuxDPO's δ would shift β·h.
MARGIN_LOSSES = frozenset({"dpo", "auxdpo", "ipo", "hinge", "robust", "exo_pair", "discopop",
                           "sigmoid_norm"})
# Losses on token-mean log-probs (TRL divides their scores by the completion length).
AVERAGED = frozenset({"ipo", "sigmoid_norm"})
# Hyperparameters each loss reads from the config.
_HYPER = {"robust": ("label_smoothing",), "exo_pair": ("label_smoothing",),
          "aot": ("label_smoothing",), "aot_unpaired": ("label_smoothing",),
          "discopop": ("discopop_tau",), "dpop": ("dpop_lambda",)}


class TokenStats:
    """Per-token fields of the policy forward at the scored positions, ``(2B, T − 1)``.

    From TRL's fused LM head when it ran (zeros off the completion), otherwise computed once
    from full logits (float64 models) with the same conventions. Cached per batch.
    """

    def __init__(self, outputs, inputs) -> None:
        self.outputs = outputs
        self.mask = inputs["completion_mask"][:, 1:]
        self.input_ids = inputs["input_ids"]
        self._cache: dict[str, torch.Tensor] = {}

    def __getattr__(self, name: str) -> torch.Tensor:
        if name not in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"):
            raise AttributeError(name)
        cache = self.__dict__["_cache"]
        if name not in cache:
            fused = getattr(self.outputs, "log_probs", None) is not None
            cache.update(self._from_fused() if fused else self._from_logits())
        return cache[name]

    def _from_fused(self) -> dict:
        width = self.mask.size(1)  # prompt-learning PEFT prepends virtual tokens: keep the last
        names = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
        return {n: getattr(self.outputs, n)[:, -width:] for n in names
                if getattr(self.outputs, n, None) is not None}

    def _from_logits(self) -> dict:
        with torch.no_grad():
            logits = self.outputs.logits[:, :-1]
            log_p = torch.log_softmax(logits, dim=-1)
            targets = self.input_ids[:, 1:]
            mask = self.mask.to(logits.dtype)
            stats = {
                "entropy": -(log_p.exp() * log_p).sum(-1) * mask,
                "log_sum_sq_probs": torch.logsumexp(2 * log_p, dim=-1) * mask,
                "mean_logits": logits.mean(-1) * mask,
                "is_top1": (logits.argmax(-1) == targets) & self.mask.bool(),
            }
        # log-probs keep their graph: the SFT term differentiates through them
        logits = self.outputs.logits[:, :-1]
        picked = torch.gather(logits, 2, self.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        stats["log_probs"] = (picked - torch.logsumexp(logits, dim=-1)) * self.mask.to(
            logits.dtype)
        return stats


def ld_weighted_logps(token_logps: torch.Tensor, mask: torch.Tensor, alpha: float):
    """LD-DPO's sequence log-probs (Liu et al. 2024, Eq. 8): tokens up to the shorter response's
    length count fully, the longer one's excess tokens count α times. Rows are [chosen; rejected];
    ``mask`` is the shifted completion mask."""
    position = mask.cumsum(dim=1)
    lengths = mask.sum(dim=1)
    shared = torch.minimum(*lengths.chunk(2)).repeat(2).unsqueeze(1)
    on = mask.bool()
    shared_part = (token_logps * (on & (position <= shared))).sum(dim=1)
    excess_part = (token_logps * (on & (position > shared))).sum(dim=1)
    return shared_part + alpha * excess_part


@dataclass
class TRLObjective:
    """Σ_k w_k·ℓ_k(pair) + w_sft·NLL(chosen), times the pair's weight, as TRL combines them.

    ``terms`` are ``(LOSSES name, weight)``; each is a pure loss of :mod:`auxdpo.losses`. The
    SFT term is the token-mean NLL of the batch's chosen responses (TRL's ``"sft"``). The
    multiplier — the data set's weight column and WPO's w(a_w)·w(a_l) (Zhou et al. 2024, Eq. 2;
    no gradient) — is applied once to the sum, which is what TRL does term by term. With an
    f-divergence, the margin losses see f'(π/π_ref) in place of log π/π_ref (on sums, then
    divided by the length for the averaged losses, as in TRL).
    """

    terms: tuple[tuple[str, float], ...]
    sft_weight: float = 0.0
    use_weighting: bool = False
    f_divergence: str = "reverse_kl"
    f_alpha: float = 0.5
    average: bool = False
    hyper: dict = field(default_factory=dict)

    def _scores(self, logratio, lengths):
        if not self.average:
            return f_divergence_score(logratio, self.f_divergence, self.f_alpha)
        return f_divergence_score(logratio * lengths, self.f_divergence, self.f_alpha) / lengths

    def __call__(self, pc, pr, rc, rr, *, inputs, stats: TokenStats, beta, pref_prob=None,
                 weight=None, delta_chosen=None, delta_rejected=None, dpop_lambda=None):
        mask = inputs["completion_mask"][:, 1:]
        lengths = mask.sum(dim=1).clamp(min=1).to(pc.dtype)
        logps = (pc, pr, rc, rr)
        margin_logps = logps
        if self.f_divergence != "reverse_kl":
            zero = torch.zeros_like(pc)
            len_w, len_l = lengths.chunk(2)
            margin_logps = (self._scores(pc - rc, len_w), self._scores(pr - rr, len_l), zero, zero)
        hyper = {**self.hyper, "dpop_lambda": dpop_lambda}
        total = torch.zeros_like(pc)
        for name, term_weight in self.terms:
            kwargs = {k: hyper[k] for k in _HYPER.get(name, ()) if hyper.get(k) is not None}
            if pref_prob is not None:
                kwargs["pref_prob"] = pref_prob
            if name == "auxdpo":
                kwargs.update(delta_chosen=delta_chosen, delta_rejected=delta_rejected)
            args = margin_logps if name in MARGIN_LOSSES else logps
            total = total + term_weight * LOSSES[name](*args, beta=beta, **kwargs).losses
        if self.sft_weight:
            chosen_logps, chosen_mask = stats.log_probs.chunk(2)[0], mask.chunk(2)[0]
            nll = -(chosen_logps * chosen_mask).sum() / chosen_mask.sum().clamp(min=1)
            total = total + self.sft_weight * nll.to(total.dtype)
        scale = weight
        if scale is not None and any(n in ("aot", "aot_unpaired") for n, _ in self.terms):
            raise ValueError("a weight column cannot weight loss_type aot/aot_unpaired: they "
                             "sort margins across the batch, so no weight belongs to a pair")
        if self.use_weighting:
            wpo = wpo_weights(stats, mask).to(total.dtype)
            scale = wpo if scale is None else scale * wpo
        if scale is not None:
            total = total * scale
        return PreferenceLoss(total, beta * (pc - rc).detach(), beta * (pr - rr).detach())


def wpo_weights(stats: TokenStats, mask: torch.Tensor) -> torch.Tensor:
    """WPO's pair weight w(a_w)·w(a_l), w = exp(mean_t [log π(y_t) − log Σ_v π(v)²]) (Eq. 2)."""
    with torch.no_grad():
        aligned = (stats.log_probs - stats.log_sum_sq_probs) * mask
        weights = torch.exp(aligned.sum(dim=1) / mask.sum(dim=1).clamp(min=1))
        chosen, rejected = weights.chunk(2)
        return chosen * rejected


def log_trl_metrics(trainer, mode: str, stats: TokenStats, inputs) -> None:
    """TRL's token metrics under TRL's names: ``entropy``, ``num_tokens``, ``logits/chosen``,
    ``logits/rejected``, ``mean_token_accuracy`` (chosen tokens whose label is the arg-max).

    The sums and counts go through one summed collective and one host copy per batch (TRL
    makes a transfer per number); the values are TRL's token-weighted means.
    """
    mask = stats.mask
    with torch.no_grad():
        chosen_mask, rejected_mask = mask.bool().chunk(2)
        chosen_logits, rejected_logits = stats.mean_logits.detach().chunk(2)
        parts = ((stats.entropy.detach() * mask).sum(), mask.sum(),
                 chosen_logits[chosen_mask].sum(), chosen_mask.sum(),
                 rejected_logits[rejected_mask].sum(), rejected_mask.sum(),
                 (stats.is_top1.chunk(2)[0] & chosen_mask).sum(), inputs["attention_mask"].sum())
        sums = torch.stack([p.to(torch.float32) for p in parts])
        sums = trainer.accelerator.reduce(sums, reduction="sum").tolist()
    entropy, tokens, chosen, n_chosen, rejected, n_rejected, top1, seen = sums
    metrics = trainer._metrics[mode]
    metrics["entropy"].append(entropy / tokens if tokens > 0 else 0.0)
    if mode == "train":
        trainer._total_train_tokens += int(seen) // trainer._tp_size
    metrics["num_tokens"] = [trainer._total_train_tokens]
    metrics["logits/chosen"].append(chosen / n_chosen if n_chosen > 0 else 0.0)
    metrics["logits/rejected"].append(rejected / n_rejected if n_rejected > 0 else 0.0)
    metrics["mean_token_accuracy"].append(top1 / n_chosen if n_chosen > 0 else 0.0)


def log_preference_metrics(trainer, mode: str, loss, result, policy_chosen, policy_rejected):
    """``loss/<method>``, ``rewards/*`` and ``logps/*`` (TRL's names for the last two)."""
    gather = trainer.accelerator.gather_for_metrics
    metrics = trainer._metrics[mode]
    chosen, rejected = result.chosen_rewards, result.rejected_rewards
    metrics[f"loss/{trainer.args.method}"].append(gather(loss.detach()).mean().item())
    metrics["rewards/chosen"].append(gather(chosen).mean().item())
    metrics["rewards/rejected"].append(gather(rejected).mean().item())
    metrics["rewards/accuracies"].append(gather((chosen > rejected).float()).mean().item())
    metrics["rewards/margins"].append(gather(chosen - rejected).mean().item())
    metrics["logps/chosen"].append(gather(policy_chosen.detach()).mean().item())
    metrics["logps/rejected"].append(gather(policy_rejected.detach()).mean().item())
