"""The oracle's finite-sample regime: n sampled pairs, hard BTL labels, the trainer itself.

Per (seed, capacity): n pairs (s, a, a') are drawn i.i.d. from the design's pair distribution
(the normalised counts n(s, a, a') of :mod:`auxdpo.harness.oracle.designs`; ``sampler="policy"``
uses the on-policy counts ρ(s)π₀(a|s)π₀(a'|s), a ≠ a', i.e. prompts from ρ and two distinct
responses from π₀), and each pair gets a hard label from BTL(r*): a ≻ a' with probability
σ(r*(s, a) − r*(s, a')) (β-independent). The expectation of the finite-sample mean loss over
this sampling is the population loss of the same design (tests/harness/oracle/test_oracle_finite.py
checks it by enumeration). The pairs and these options: :mod:`auxdpo.harness.oracle.sampling`.

Every method is then trained by :class:`auxdpo.train.AuxDPOTrainer` on the task's float64
tiny GPT-2, fed pre-tokenised rows (``prompt_ids`` = the prompt's P tokens, ``chosen_ids`` /
``rejected_ids`` = the L response tokens: no BOS, no EOS, no padding), so the trainer scores
exactly the enumeration's log π(a|s). The trained parameters are read back into the flat θ
of :class:`~auxdpo.harness.oracle.capacity.FlatCapacity` (same trainable set: ``norm`` is handed to
the trainer as a regex over the same names) and evaluated exactly. Two-stage RLHF
(``rlhf_2stage``) fits a Bradley–Terry reward model on the same pairs
(:mod:`auxdpo.harness.oracle.reward_model`) and maximises the exact KL-regularised objective against
r̂ (:func:`auxdpo.harness.oracle.solvers.fit_rlhf`) over the same trainable set; all rows are scored
under r*.
"""

from __future__ import annotations

import re
import tempfile
import time

import torch

from auxdpo.harness.oracle.capacity import FlatCapacity
from auxdpo.harness.oracle.cells import cell_setup, exact_rlhf, method_variants
from auxdpo.harness.oracle.designs import design_counts
from auxdpo.harness.oracle.metrics import policy_metrics
from auxdpo.harness.oracle.reward_model import fit_reward_table
from auxdpo.harness.oracle.sampling import DTYPE, FiniteConfig, PairSample, sample_pairs
from auxdpo.harness.oracle.tasks import all_responses
from auxdpo.losses import get_loss

__all__ = ["build_trainer", "finite_cell", "finite_loss", "train_method", "trainer_capacity",
           "trainer_pair_logps"]


def finite_loss(method: str, log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
                sample: PairSample, *, beta: float, delta: torch.Tensor | None = None,
                dpop_lambda: float = 50.0, ipo_length: int = 1) -> torch.Tensor:
    """The empirical loss (1/n)Σ_i ℓ(chosen_i ≻ rejected_i) from ``(S, A)`` log-prob tables.

    ``delta`` ``(S·A,)`` gives AuxDPO a per-(prompt, response) offset (the population's
    parametrisation). IPO scores mean token log-probs (÷ ``ipo_length``), as the trainer.
    """
    scale = 1.0 / ipo_length if method == "ipo" else 1.0
    s, w, l = sample.state, sample.chosen, sample.rejected
    kw = {"dpop_lambda": dpop_lambda} if method == "dpop" else {}
    if delta is not None:
        num_actions = log_probs.shape[1]
        kw.update(delta_chosen=delta[s * num_actions + w], delta_rejected=delta[s * num_actions + l])
    out = get_loss(method)(log_probs[s, w] * scale, log_probs[s, l] * scale,
                           ref_log_probs[s, w] * scale, ref_log_probs[s, l] * scale,
                           beta=beta, **kw)
    return out.losses.mean()


def trainer_capacity(capacity) -> str:
    """The trainer's ``capacity`` preset that trains exactly ``capacity.names``."""
    if capacity.lora_target is not None:
        raise ValueError("finite regime: the oracle's lora:<r> (U fixed, V trained) differs "
                         "from the trainer's PEFT LoRA; use norm, last-block, full or regex:")
    if capacity.spec != "norm":
        return capacity.spec
    return "regex:^(" + "|".join(re.escape(name) for name in capacity.names) + ")$"


def _word_tokenizer(vocab_size: int):
    """A word-level tokenizer over "t0".."t{V−1}" (TRL wants a processing class; rows are
    pre-tokenised, so it is used for nothing but its pad id, which never appears)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # pad 0 and eos 1, as the tiny model's config (TRL would rewrite the config otherwise)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="t0", eos_token="t1")


def _pretokenised_trainer():
    """AuxDPOTrainer that takes ``prompt_ids``/``chosen_ids``/``rejected_ids`` rows as they are.

    TRL 1.16's ``_prepare_dataset`` always runs prompt extraction, EOS appending and
    tokenisation on text; this subclass skips it for pre-tokenised rows and adds the
    ``aux_index`` column that AuxDPO's offsets address.
    """
    from auxdpo.train import AuxDPOTrainer
    from auxdpo.train.data import AUX_INDEX

    class PretokenisedTrainer(AuxDPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if dataset_name == "train" and AUX_INDEX not in dataset.column_names:
                dataset = dataset.add_column(AUX_INDEX, list(range(len(dataset))))
            return dataset

    return PretokenisedTrainer


def _rows(task, sample: PairSample, responses: torch.Tensor) -> list[dict]:
    prompts = task.prompts
    return [{"prompt_ids": prompts[s].tolist(), "chosen_ids": responses[w].tolist(),
             "rejected_ids": responses[l].tolist()}
            for s, w, l in zip(sample.state.tolist(), sample.chosen.tolist(),
                               sample.rejected.tolist())]


def build_trainer(task, capacity, sample: PairSample, *, method: str, beta: float,
                  finite: FiniteConfig, output_dir: str, seed: int, mode: str = "projection",
                  lambda_null: float = 1.0, dpop_lambda: float = 50.0,
                  aux_offsets: str = "response", aux_null_weights: str = "prompt",
                  aux_delta_scale: float | None = None,
                  aux_delta_half_count: float | None = None):
    """An AuxDPOTrainer on a deep copy of the task's model, over ``sample``'s rows."""
    import copy

    from datasets import Dataset

    from auxdpo.train import AuxDPOConfig

    cfg = task.config
    args = AuxDPOConfig(
        output_dir=output_dir, method=method, capacity=trainer_capacity(capacity),
        aux_constraint=mode, lambda_null=lambda_null, delta_lr=finite.delta_lr,
        aux_offsets=aux_offsets, aux_null_weights=aux_null_weights,
        aux_delta_scale=aux_delta_scale, aux_delta_half_count=aux_delta_half_count,
        lambda_amp=finite.lambda_amp if mode == "batch" else 0.0,
        dpop_lambda=dpop_lambda, beta=beta, learning_rate=finite.lr,
        num_train_epochs=finite.epochs, per_device_train_batch_size=finite.batch_size,
        lr_scheduler_type=finite.scheduler, weight_decay=0.0, logging_steps=10 ** 9,
        save_strategy="no", report_to=[], bf16=False, gradient_checkpointing=False,
        use_cpu=True, seed=seed, disable_tqdm=True, metrics_file=None,
        max_length=cfg.prompt_length + cfg.response_length)
    responses = all_responses(cfg.vocab_size, cfg.response_length)
    data = Dataset.from_list(_rows(task, sample, responses))
    model = copy.deepcopy(task.model)
    trainer = _pretokenised_trainer()(model, args=args, train_dataset=data,
                                      processing_class=_word_tokenizer(cfg.vocab_size))
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)             # its log lines would go to stdout
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    if trained != list(capacity.names):
        raise ValueError(f"trainer trains {trained}, the oracle's capacity {capacity.names}")
    return trainer


def trainer_pair_logps(trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's own ``(n,)`` chosen and rejected log-probs of its dataset, in order."""
    model = trainer.model
    out_chosen, out_rejected = [], []
    with torch.no_grad():
        for batch in trainer.dataset_batches():
            kwargs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            logps, _ = trainer.sequence_logps(model, {**kwargs, "use_cache": False}, batch)
            chosen, rejected = logps.chunk(2)
            out_chosen.append(chosen)
            out_rejected.append(rejected)
    return torch.cat(out_chosen), torch.cat(out_rejected)


def train_method(task, capacity, sample: PairSample, **kwargs) -> tuple[torch.Tensor, dict]:
    """Train with :func:`build_trainer`'s trainer; return θ ``(d,)`` (read back) and stats."""
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(task, capacity, sample, output_dir=out, **kwargs)
        result = trainer.train()
    params = dict(trainer.model.named_parameters())
    theta = torch.cat([params[name].detach().reshape(-1) for name in capacity.names])
    return theta.to(DTYPE), {"train_loss": float(result.training_loss),
                             "steps": int(result.global_step)}


def _setup(config, task, capacity_spec: str, seed: int) -> dict:
    """Capacity, log-prob functions, θ₀, A_θ₀, the design's counts and the pair sample."""
    S, finite, reward = task.num_prompts, config.finite, task.reward
    capacity = FlatCapacity(task.model, capacity_spec, seed=seed)
    trainer_capacity(capacity)                                   # fail early on LoRA
    cell = cell_setup(config, task, capacity, seed)              # as the population cell
    source = cell["counts"] if finite.sampler == "design" else design_counts(
        "on-policy", rho=cell["rho"], probs0=cell["logp0"][:S].exp())
    sample = sample_pairs(source, reward[:S], finite.pair_counts[0],
                          torch.Generator().manual_seed(20_000 + seed))
    return dict(cell, capacity=capacity, sample=sample)


def finite_cell(config, task, capacity_spec: str, seed: int, log) -> list[dict]:
    """All β and methods for one (seed, capacity) in the finite-sample regime."""
    finite, reward = config.finite, task.reward
    cell = _setup(config, task, capacity_spec, seed)
    capacity, sample, theta0, logp0 = (cell[k] for k in ("capacity", "sample", "theta0",
                                                         "logp0"))
    r_hat = None
    if finite.rm_steps > 0:
        start = time.time()
        r_hat, rm_stats = fit_reward_table(config, task, sample, seed)
        rm_stats["seconds"] = time.time() - start
        log(f"seed {seed} {capacity_spec} reward model: agreement with r* "
            f"{rm_stats['rm_agreement']:.3f}, best step {rm_stats['rm_best_step']}, "
            f"{rm_stats['seconds']:.1f}s")
    rows = []
    for beta in config.betas:
        rlhf, local = exact_rlhf(config, cell, reward, beta)
        solved = {"iterations": rlhf.iterations, "capped": rlhf.capped}
        thetas = {"base": (theta0, {}), "rlhf": (rlhf.theta, solved), "rlhf_local": (local, {})}
        for name, loss_name, kwargs in method_variants(config, importance=False):
            start = time.time()
            keys = ({"aux_offsets": kwargs["key"], "aux_null_weights": kwargs["weights"],
                     "aux_delta_scale": kwargs["delta_scale"],
                     "aux_delta_half_count": kwargs["half_count"]}
                    if loss_name == "auxdpo" else {})
            theta, stats = train_method(
                task, capacity, sample, method=loss_name, beta=beta, finite=finite, seed=seed,
                dpop_lambda=config.dpop_lambda, mode=kwargs.get("mode", "projection"),
                lambda_null=kwargs.get("lambda_null", config.lambdas[0]), **keys)
            thetas[name] = (theta, {**stats, "seconds": time.time() - start})
            log(f"seed {seed} {capacity_spec} β={beta:g} n={finite.pair_counts[0]} {name}: "
                f"{stats['steps']} steps, train loss {stats['train_loss']:.4f}, "
                f"{time.time() - start:.1f}s")
        if r_hat is not None:                                     # two-stage RLHF against r̂
            thetas["rlhf_2stage"] = (exact_rlhf(config, cell, r_hat, beta)[0].theta, rm_stats)
        with torch.no_grad():
            j_base = float(policy_metrics(logp0, logp0, reward, cell["rho"], beta, j_base=0.0,
                                          j_rlhf=1.0)["J"])
            for name, (theta, stats) in thetas.items():
                m = policy_metrics(cell["fn"](theta), logp0, reward, cell["rho"], beta,
                                   j_base=j_base, j_rlhf=rlhf.objective)
                rows.append({"seed": seed, "capacity": capacity_spec, "dim": capacity.dim,
                             "responses": int(cell["A"].shape[1]), "beta": beta,
                             "method": name, "pairs": finite.pair_counts[0], **stats, **m})
    return rows
