"""The protocol recipe: what to train, on what, how, and the grid of runs.

A recipe is a YAML mapping with sections ``model``, ``data``, ``train``, ``eval`` and
``grid`` (plus ``name`` and free-form ``estimates``), each a dataclass below. Unknown keys
are an error naming the section and key. :func:`expand_grid` turns the grid into
:class:`RunSpec` objects: methods × settings × data sets × capacities × seeds, in a fixed
order (data set, setting, capacity, method, seed), so the runner's progress is reproducible.

Capacity labels: ``"25%"``, ``"50%"``, ``"75%"`` unfreeze the last k% of transformer blocks
(trainer preset ``last:0.25`` ...); ``"100%"`` is full fine-tuning (``full``: the paper's
Table 1 reports full fine-tuning, and the 100% point of Figures 4/5 is that run); any trainer
preset (``last-block``, ``lora:4``, ``last:0.3``, ``regex:...``) is also accepted as is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from auxdpo.data.schema import default_source
from auxdpo.harness.evaluation.models import ModelSpec

__all__ = ["METHODS", "SETTINGS", "DATASETS", "ModelSpec", "DataSpec", "TrainSpec", "EvalSpec",
           "GridSpec", "Recipe", "RunSpec", "capacity_preset", "recipe_from_dict",
           "load_recipe", "expand_grid", "recipe_fingerprint", "RENAMED_KEYS"]

METHODS = ("dpo", "auxdpo", "ipo", "dpop")
SETTINGS = ("id", "ood")
DATASETS = ("mmlu-pro", "rewardbench2")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def capacity_preset(label: str) -> str:
    """The trainer's capacity preset for a recipe label (``"50%"`` → ``"last:0.5"``)."""
    from auxdpo.train.config import parse_capacity  # pure function; imports trl's DPOConfig

    match = _PERCENT.match(str(label).strip())
    if match:
        fraction = float(match.group(1)) / 100.0
        if not 0 < fraction <= 1:
            raise ValueError(f"grid.capacities: {label!r} must lie in (0%, 100%]")
        return "full" if fraction == 1 else f"last:{fraction:g}"
    parse_capacity(str(label))  # raises ValueError with the reason
    return str(label)


@dataclass
class DataSpec:
    """Where the rows come from and how many are used."""

    mmlu_pro: str = field(default_factory=lambda: default_source(
        "mmlu_pro/test.json", "TIGER-Lab/MMLU-Pro"), metadata={
        "help": "MMLU-Pro file or hub name (default: $AUXDPO_DATA_DIR/mmlu_pro/test.json when "
                "AUXDPO_DATA_DIR is set, else TIGER-Lab/MMLU-Pro)."})
    rewardbench2: str = field(default="allenai/reward-bench-2", metadata={
        "help": "RewardBench 2 file or hub name; 'synthetic' writes the smoke preset's labelled "
                "synthetic set into the output folder."})
    ultrafeedback: str = field(default_factory=lambda: default_source(
        "ultrafeedback/train_1k.jsonl", "HuggingFaceH4/ultrafeedback_binarized"), metadata={
        "help": "UltraFeedback pairs (OOD training): file or hub name (default: "
                "$AUXDPO_DATA_DIR/ultrafeedback/train_1k.jsonl when AUXDPO_DATA_DIR is set, "
                "else HuggingFaceH4/ultrafeedback_binarized)."})
    dataset_format: str = field(default="ultrafeedback", metadata={
        "help": "How data.ultrafeedback is read: ultrafeedback (pairs as they are), or a "
                "multi-comparison format expanded into every pair: rlhflow-ultrafeedback "
                "(RLHFlow/UltraFeedback-preference-standard), openbmb-ultrafeedback "
                "(openbmb/UltraFeedback), scored-responses (docs/data.md)."})
    dataset_ties: str = field(default="drop", metadata={
        "help": "Multi-comparison formats: drop pairs of equal scores, or 'half' (soft label "
                "1/2)."})
    dataset_soft_label_temperature: float | None = field(default=None, metadata={
        "help": "Multi-comparison formats: soft labels sigmoid(score difference / T); null: "
                "hard labels."})
    dataset_score_field: str = field(default="fine-grained_score", metadata={
        "help": "openbmb-ultrafeedback: fine-grained_score or overall_score."})
    split_seed: int = field(default=0, metadata={
        "help": "Seed of the 80/20 split by prompt; fixed across training seeds so every run of "
                "a data set is scored on the same held-out rows."})
    test_fraction: float = field(default=0.2, metadata={"help": "Held-out share of prompts."})
    max_rows: int | None = field(default=None, metadata={
        "help": "Use at most this many MMLU-Pro questions / RewardBench 2 prompts (a sample "
                "seeded by split_seed, after the max_chars filter); None: all."})
    max_ood_pairs: int | None = field(default=None, metadata={
        "help": "Use at most this many UltraFeedback pairs (a seeded sample); None: all."})
    max_chars: int | None = field(default=None, metadata={
        "help": "Drop MMLU-Pro / RewardBench 2 rows whose prompt plus longest answer exceeds "
                "this many characters (keeps CPU smoke runs short); None: keep all."})
    max_ood_prompt_chars: int | None = field(default=None, metadata={
        "help": "Drop UltraFeedback pairs whose prompt exceeds this many characters (their "
                "responses are truncated to train.max_length by the trainer); None: keep all."})

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        from auxdpo.data.formats import TRAIN_FORMATS

        if self.dataset_format not in TRAIN_FORMATS:
            raise ValueError(f"data.dataset_format must be one of "
                             f"{', '.join(TRAIN_FORMATS)}, got {self.dataset_format!r}")
        try:
            self.expansion_options()
        except ValueError as exc:
            raise ValueError(f"data.ultrafeedback_*: {exc}") from None
        for name in ("max_rows", "max_ood_pairs", "max_chars", "max_ood_prompt_chars"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"data.{name} must be a positive integer or null, got {value!r}")

    def expansion_options(self):
        """How a multi-comparison data.ultrafeedback is expanded into pairs."""
        from auxdpo.data.comparisons import ExpansionOptions

        return ExpansionOptions(ties=self.dataset_ties,
                                temperature=self.dataset_soft_label_temperature,
                                score_field=self.dataset_score_field)


@dataclass
class TrainSpec:
    """Optimization settings shared by every run (the paper holds them fixed per panel)."""

    beta: float = field(default=0.1, metadata={"help": "β of every method."})
    learning_rate: float = field(default=5e-6, metadata={"help": "Model learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the train pairs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: off)."})
    batch_size: int = field(default=8, metadata={"help": "Per-device train batch size."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Accumulation steps."})
    max_length: int = field(default=1024, metadata={"help": "Max tokens of prompt + response."})
    bf16: bool = field(default=False, metadata={"help": "Train in bfloat16 mixed precision."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Save activations."})
    extra: dict = field(default_factory=dict, metadata={
        "help": "Any other AuxDPOConfig fields (aux_constraint, lambda_null, delta_lr, "
                "dpop_lambda, warmup_steps, ...), passed through unchanged."})

    def __post_init__(self):
        for name in ("beta", "learning_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"train.{name} must be a finite number > 0, got {value}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("train.batch_size and train.gradient_accumulation_steps must be >= 1")
        reserved = {"method", "capacity", "seed", "output_dir"} & set(self.extra)
        if reserved:
            raise ValueError(f"train.extra may not set {sorted(reserved)}: the grid sets them")


@dataclass
class EvalSpec:
    """How the held-out sets are scored and which numbers the tables show."""

    batch_size: int = field(default=8, metadata={"help": "Scoring batch size."})
    max_length: int | None = field(default=None, metadata={
        "help": "Truncate scored sequences to this many tokens (prompt start dropped first); "
                "None: train.max_length."})
    generate: bool = field(default=False, metadata={
        "help": "Also score MMLU-Pro by generating an answer and extracting its letter (the "
                "paper's Table 2); Table 2 then shows that accuracy."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation length (--generate)."})
    table_capacity: str | None = field(default=None, metadata={
        "help": "Capacity label whose runs fill Tables 1 and 2 (default: 100% if in the grid, "
                "else the last capacity)."})


@dataclass
class GridSpec:
    """The runs: every combination is one training run and one result file."""

    methods: list = field(default_factory=lambda: list(METHODS), metadata={
        "help": "Subset of dpo, auxdpo, ipo, dpop."})
    settings: list = field(default_factory=lambda: list(SETTINGS), metadata={
        "help": "id (train on the data set's 80%) and/or ood (train on UltraFeedback)."})
    datasets: list = field(default_factory=lambda: list(DATASETS), metadata={
        "help": "mmlu-pro and/or rewardbench2 (always evaluated on the held-out 20%)."})
    capacities: list = field(default_factory=lambda: ["25%", "50%", "75%", "100%",
                                                      "last-block", "lora:4"], metadata={
        "help": "Capacity labels: k% of blocks by depth, or trainer presets."})
    seeds: Any = field(default=3, metadata={
        "help": "A list of training seeds, or a count n meaning 0..n-1."})

    def __post_init__(self):
        for name, allowed in (("methods", METHODS), ("settings", SETTINGS),
                              ("datasets", DATASETS)):
            values = getattr(self, name)
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{name} must be a non-empty list")
            bad = [v for v in values if v not in allowed]
            if bad or len(set(values)) != len(values):
                raise ValueError(f"grid.{name}: {bad or 'duplicates'} not allowed; "
                                 f"choose from {list(allowed)}")
        if not isinstance(self.capacities, list) or not self.capacities:
            raise ValueError("grid.capacities must be a non-empty list")
        self.capacities = [str(c) for c in self.capacities]
        if len(set(self.capacities)) != len(self.capacities):
            raise ValueError("grid.capacities has duplicates")
        for label in self.capacities:
            capacity_preset(label)
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            if self.seeds < 1:
                raise ValueError(f"grid.seeds must be >= 1, got {self.seeds}")
            self.seeds = list(range(self.seeds))
        if (not isinstance(self.seeds, list) or not self.seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds)
                or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"grid.seeds must be a count or a list of distinct ints, "
                             f"got {self.seeds!r}")


@dataclass
class Recipe:
    """A whole protocol: sections above, a name, and labelled resource estimates."""

    name: str = "protocol"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    estimates: dict = field(default_factory=dict)

    def __post_init__(self):
        label = self.eval.table_capacity
        if label is not None and label not in self.grid.capacities:
            raise ValueError(f"eval.table_capacity {label!r} is not in grid.capacities "
                             f"{self.grid.capacities}")

    @property
    def table_capacity(self) -> str:
        """The capacity label whose runs fill Tables 1 and 2."""
        if self.eval.table_capacity is not None:
            return self.eval.table_capacity
        return "100%" if "100%" in self.grid.capacities else self.grid.capacities[-1]

    def to_dict(self) -> dict:
        """Plain data (YAML/JSON-ready), the inverse of :func:`recipe_from_dict`."""
        return asdict(self)


# Keys spelled as auxdpo train's RunArguments spells them: (section, old key) -> key.
RENAMED_KEYS = {("data", f"ultrafeedback_{suffix}"): f"dataset_{suffix}"
                for suffix in ("format", "ties", "soft_label_temperature", "score_field")}

_SECTIONS = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec, "eval": EvalSpec,
             "grid": GridSpec}


def _section(name: str, cls, values: Any):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ValueError(f"recipe section {name!r} must be a mapping, got {type(values).__name__}")
    for key in values:
        if (name, key) in RENAMED_KEYS:
            raise ValueError(f"recipe section {name!r}: {key!r} is now "
                             f"{RENAMED_KEYS[name, key]!r} (the name auxdpo train uses)")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"recipe section {name!r}: unknown key(s) {unknown}; "
                         f"known: {sorted(known)}")
    from auxdpo.train.config_check import check_config_values

    try:
        check_config_values(values, cls)
    except ValueError as exc:
        raise ValueError(f"recipe section {name!r}: {exc}") from None
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"recipe section {name!r}: {exc}") from None


def recipe_from_dict(values: dict) -> Recipe:
    """Build and validate a :class:`Recipe`; ValueError names the bad section and key."""
    if not isinstance(values, dict):
        raise ValueError(f"a recipe must be a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - set(_SECTIONS) - {"name", "estimates"})
    if unknown:
        raise ValueError(f"recipe: unknown top-level key(s) {unknown}")
    sections = {name: _section(name, cls, values.get(name)) for name, cls in _SECTIONS.items()}
    estimates = values.get("estimates") or {}
    if not isinstance(estimates, dict):
        raise ValueError("recipe: estimates must be a mapping")
    return Recipe(name=str(values.get("name", "protocol")), estimates=estimates, **sections)


def load_recipe(path: str) -> Recipe:
    """Read a YAML recipe file."""
    import yaml

    from auxdpo.yamlio import load_yaml

    with open(path, encoding="utf-8") as handle:
        try:
            values = load_yaml(handle)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
    try:
        return recipe_from_dict(values or {})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


_UNSET = object()
_HASHED_AS = {new: old for (_, old), new in RENAMED_KEYS.items()}
_LATER_DATA_DEFAULTS = {"dataset_format": "ultrafeedback", "dataset_ties": "drop",
                        "dataset_soft_label_temperature": None,
                        "dataset_score_field": "fine-grained_score"}


def recipe_fingerprint(recipe: Recipe) -> str:
    """Hash of everything but the grid, estimates and name: runs made under one fingerprint
    are comparable; the grid may grow between invocations (new runs are simply added)."""
    core = {k: v for k, v in recipe.to_dict().items() if k not in ("grid", "estimates", "name")}
    # data fields added after results were first recorded count only when set, so a recipe
    # that leaves them at their defaults keeps the fingerprint its earlier runs carry
    core["data"] = {k: v for k, v in core["data"].items()
                    if _LATER_DATA_DEFAULTS.get(k, _UNSET) != v}
    # renamed keys hash under the names existing results folders carry
    core["data"] = {_HASHED_AS.get(k, k): v for k, v in core["data"].items()}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    dataset: str
    setting: str
    method: str
    capacity: str
    seed: int

    @property
    def preset(self) -> str:
        """The trainer's capacity preset."""
        return capacity_preset(self.capacity)

    @property
    def run_id(self) -> str:
        """A file-name-safe unique name, e.g. ``mmlu-pro__id__dpo__cap-50pct__seed0``."""
        slug = re.sub(r"[^A-Za-z0-9.-]+", "-", self.capacity.replace("%", "pct")).strip("-")
        return f"{self.dataset}__{self.setting}__{self.method}__cap-{slug}__seed{self.seed}"


def expand_grid(recipe: Recipe) -> list[RunSpec]:
    """Every run of the grid, ordered data set → setting → capacity → method → seed."""
    grid = recipe.grid
    runs = [RunSpec(d, s, m, c, seed) for d in grid.datasets for s in grid.settings
            for c in grid.capacities for m in grid.methods for seed in grid.seeds]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("grid.capacities: two labels map to the same run id")
    return runs
