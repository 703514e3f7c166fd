"""The oracle's finite-sample regime: n sampled pairs, hard BTL labels, the trainer itself.

Per (seed, capacity): n pairs (s, a, a') are drawn i.i.d. from the design's pair distribution
(the normalised counts n(s, a, a') of :mod:`auxdpo.oracle.designs`; ``sampler="policy"``
uses the on-policy counts ρ(s)π₀(a|s)π₀(a'|s), a ≠ a', i.e. prompts from ρ and two distinct
responses from π₀), and each pair gets a hard label from BTL(r*): a ≻ a' with probability
σ(r*(s, a) − r*(s, a')) (β-independent). The expectation of the finite-sample mean loss over
this sampling is the population loss of the same design (tests/test_oracle_finite.py checks
it by enumeration).

Every method is then trained by :class:`auxdpo.train.AuxDPOTrainer` on the task's float64
tiny GPT-2, fed pre-tokenised rows (``prompt_ids`` = the prompt's P tokens, ``chosen_ids`` /
``rejected_ids`` = the L response tokens: no BOS, no EOS, no padding), so the trainer scores
exactly the enumeration's log π(a|s). The trained parameters are read back into the flat θ
of :class:`~auxdpo.oracle.capacity.FlatCapacity` (same trainable set: ``norm`` is handed to
the trainer as a regex over the same names) and evaluated exactly. Two-stage RLHF
(``rlhf_2stage``) fits a Bradley–Terry reward model on the same pairs
(:mod:`auxdpo.oracle.reward_model`) and maximises the exact KL-regularised objective against
r̂ (:func:`auxdpo.oracle.solvers.fit_rlhf`) over the same trainable set; all rows are scored
under r*.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field

import torch

from auxdpo.losses import get_loss

__all__ = ["FINITE_AUX_MODES", "FINITE_SOLVERS", "SAMPLERS", "FiniteConfig", "PairSample", "build_trainer",
           "enumerate_draws", "finite_cell", "finite_loss", "fit_reward_table", "sample_pairs",
           "train_method", "trainer_capacity", "trainer_pair_logps"]

DTYPE = torch.float64
SAMPLERS = ("design", "policy")
FINITE_AUX_MODES = ("projection", "global", "batch")
FINITE_SOLVERS = ("trainer", "full-batch")


@dataclass
class FiniteConfig:
    """Options of the finite-sample regime (``OracleConfig.finite``)."""

    pairs: int | list[int] = field(default=1000, metadata={
        "help": "n, sampled preference pairs per seed (full-batch: a list is an n-sweep)"})
    solver: str = field(default="trainer", metadata={
        "help": "trainer: each method trained by AuxDPOTrainer; full-batch: the exact "
                "minimiser of each empirical loss (auxdpo.oracle.fullbatch)"})
    aux_offsets: list[str] = field(default_factory=lambda: ["response"], metadata={
        "help": "AuxDPO's offset keys: response (one δ per prompt-response) and/or row "
                "(one per pair side)"})
    null_weights: list[str] = field(default_factory=lambda: ["multiplicity"], metadata={
        "help": "weights ω of AuxDPO's empirical constraint: multiplicity, reference, prompt"})
    responses_per_prompt: int = field(default=0, metadata={
        "help": "k > 0: prompts s ~ ρ with k responses each from the behaviour policy, "
                "every pair labelled; 0: i.i.d. pairs"})
    sampler: str = field(default="design", metadata={
        "help": "design: pairs from the design's counts; policy: s ~ ρ, a ≠ a' ~ π₀(·|s)"})
    epochs: float = field(default=20.0, metadata={
        "help": "trainer epochs (row-keyed δ acts from the second epoch on)"})
    lr: float = field(default=1e-2, metadata={"help": "trainer learning rate (AdamW)"})
    batch_size: int = field(default=100, metadata={"help": "trainer per-device batch size"})
    scheduler: str = field(default="linear", metadata={
        "help": "trainer learning-rate schedule (transformers' lr_scheduler_type)"})
    delta_lr: float = field(default=0.1, metadata={"help": "AuxDPO's δ learning rate"})
    lambda_amp: float = field(default=0.0, metadata={
        "help": "AuxDPO batch mode's amplitude term λ_amp‖δ_B‖² (paper Sec. 7.2; 0: off)"})
    rm_steps: int = field(default=200, metadata={
        "help": "reward model: full-batch Adam steps (0: no rlhf_2stage row)"})
    rm_lr: float = field(default=3e-3, metadata={"help": "reward model: Adam learning rate"})
    rm_val_fraction: float = field(default=0.1, metadata={
        "help": "reward model: share of pairs held out for early stopping"})

    def __post_init__(self):
        from auxdpo.oracle.fullbatch import NULL_WEIGHTS, OFFSET_KEYS

        counts = self.pair_counts
        if (not counts or any(not isinstance(n, int) or n < 2 for n in counts)
                or self.batch_size < 1 or self.rm_steps < 0):
            raise ValueError("finite: need pairs >= 2, batch_size >= 1 and rm_steps >= 0")
        if self.solver not in FINITE_SOLVERS:
            raise ValueError(f"finite: solver must be one of {FINITE_SOLVERS}, "
                             f"got {self.solver!r}")
        if self.solver == "trainer" and len(counts) > 1:
            raise ValueError("finite: several pair counts need solver full-batch (the "
                             "trainer runs one n at a time)")
        for name, allowed in (("aux_offsets", OFFSET_KEYS), ("null_weights", NULL_WEIGHTS)):
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values) or len(set(values)) < len(
                    values):
                raise ValueError(f"finite: {name} must be distinct values of {allowed}, "
                                 f"got {values!r}")
        if self.responses_per_prompt < 0 or self.responses_per_prompt == 1:
            raise ValueError("finite: responses_per_prompt must be 0 (i.i.d. pairs) or >= 2, "
                             f"got {self.responses_per_prompt!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"finite: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.lambda_amp < 0:
            raise ValueError(f"finite: lambda_amp must be >= 0, got {self.lambda_amp!r}")
        for name in ("epochs", "lr", "delta_lr", "rm_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"finite: {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.rm_val_fraction < 1:
            raise ValueError(f"finite: rm_val_fraction must lie in [0, 1), "
                             f"got {self.rm_val_fraction!r}")

    @property
    def pair_counts(self) -> list[int]:
        """The n of each sweep point (one for the trainer)."""
        return [self.pairs] if isinstance(self.pairs, int) else list(self.pairs)


@dataclass
class PairSample:
    """n labelled pairs: prompt index, winner and loser response indices, each ``(n,)`` long."""

    state: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor

    def __len__(self) -> int:
        return int(self.state.numel())


def sample_pairs(counts: torch.Tensor, reward: torch.Tensor, n: int,
                 generator: torch.Generator) -> PairSample:
    """n i.i.d. pairs (s, a, a') ∝ ``counts`` ``(S, A, A)``, labels from BTL(``reward``)."""
    S, A, _ = counts.shape
    flat = torch.multinomial(counts.reshape(-1), n, replacement=True, generator=generator)
    state, first, second = flat // (A * A), (flat // A) % A, flat % A
    p_first = torch.sigmoid(reward[state, first] - reward[state, second])  # BTL(r*)
    first_wins = torch.rand(n, generator=generator, dtype=DTYPE) < p_first
    return PairSample(state, torch.where(first_wins, first, second),
                      torch.where(first_wins, second, first))


def enumerate_draws(counts: torch.Tensor, reward: torch.Tensor
                    ) -> tuple[torch.Tensor, PairSample]:
    """Every outcome (s, winner, loser) of one draw of :func:`sample_pairs`, each once, and
    its probability ``(K,)``: (n(s, w, l) + n(s, l, w))·σ(r*(s, w) − r*(s, l)) / Σn."""
    either = counts + counts.transpose(1, 2)                 # the unordered pair is drawn
    s, w, l = torch.nonzero(either > 0, as_tuple=True)
    prob = either[s, w, l] * torch.sigmoid(reward[s, w] - reward[s, l])   # BTL(r*)
    return prob / counts.sum(), PairSample(s, w, l)


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
                  aux_offsets: str = "response", aux_null_weights: str = "prompt"):
    """An AuxDPOTrainer on a deep copy of the task's model, over ``sample``'s rows."""
    import copy

    from datasets import Dataset

    from auxdpo.oracle.tasks import all_responses
    from auxdpo.train import AuxDPOConfig

    cfg = task.config
    args = AuxDPOConfig(
        output_dir=output_dir, method=method, capacity=trainer_capacity(capacity),
        aux_constraint=mode, lambda_null=lambda_null, delta_lr=finite.delta_lr,
        aux_offsets=aux_offsets, aux_null_weights=aux_null_weights,
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
            logps, _ = trainer._forward_logps(model, {**kwargs, "use_cache": False}, batch)
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


def fit_reward_table(config, task, sample: PairSample, seed: int) -> tuple[torch.Tensor, dict]:
    """Two-stage RLHF's first stage: r̂ ``(S + H, A)`` from a Bradley–Terry reward model
    fitted on ``sample`` (training prompts only), and the fit's statistics."""
    from auxdpo.oracle.metrics import pair_agreement
    from auxdpo.oracle.reward_model import RewardModel, fit_reward_model, scored_inputs
    from auxdpo.oracle.tasks import all_responses

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


def _setup(config, task, capacity_spec: str, seed: int) -> dict:
    """Capacity, log-prob functions, θ₀, A_θ₀, the design's counts and the pair sample."""
    from auxdpo.oracle.capacity import FlatCapacity
    from auxdpo.oracle.designs import design_counts
    from auxdpo.oracle.runner import cell_setup

    S, finite, reward = task.num_prompts, config.finite, task.reward
    capacity = FlatCapacity(task.model, capacity_spec, seed=seed)
    trainer_capacity(capacity)                                   # fail early on LoRA
    cell = cell_setup(config, task, capacity, seed)              # as the population cell
    source = cell["counts"] if finite.sampler == "design" else design_counts(
        "on-policy", rho=cell["rho"], probs0=cell["logp0"][:S].exp())
    sample = sample_pairs(source, reward[:S], finite.pair_counts[0],
                          torch.Generator().manual_seed(20_000 + seed))
    return dict(cell, capacity=capacity, sample=sample)


def _exact_rlhf(config, cell: dict, reward: torch.Tensor, beta: float):
    """argmax_θ J(θ; reward) over the cell's trainable set (from θ₀ and the local step)."""
    from auxdpo.lab.problems import PreferenceProblem
    from auxdpo.oracle.solvers import fit_rlhf, local_rlhf_theta

    S = cell["rho"].numel()
    problem = PreferenceProblem(cell["rho"], reward[:S], cell["counts"], beta)
    local = local_rlhf_theta(cell["A"], cell["rho"], cell["logp0"][:S], reward[:S], beta,
                             cell["theta0"])
    fit = fit_rlhf(cell["fn_train"], problem, cell["theta0"], A=cell["A"],
                   starts=[cell["theta0"], local], max_iter=config.max_iter,
                   floor=config.precondition_floor)
    return fit, local


def finite_cell(config, task, capacity_spec: str, seed: int, log) -> list[dict]:
    """All β and methods for one (seed, capacity) in the finite-sample regime."""
    from auxdpo.oracle.fullbatch import method_variants
    from auxdpo.oracle.metrics import policy_metrics

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
        rlhf, local = _exact_rlhf(config, cell, reward, beta)
        solved = {"iterations": rlhf.iterations, "capped": rlhf.capped}
        thetas = {"base": (theta0, {}), "rlhf": (rlhf.theta, solved), "rlhf_local": (local, {})}
        for name, loss_name, kwargs in method_variants(config, importance=False):
            start = time.time()
            keys = ({"aux_offsets": kwargs["key"], "aux_null_weights": kwargs["weights"]}
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
            thetas["rlhf_2stage"] = (_exact_rlhf(config, cell, r_hat, beta)[0].theta, rm_stats)
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
