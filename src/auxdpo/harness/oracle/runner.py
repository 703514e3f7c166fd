"""The oracle run: seeds × capacities × β × methods on an enumerable task.

For every seed a task is built (model, warm-up, prompts, r*); every capacity is one cell,
run by its regime's module: :mod:`auxdpo.harness.oracle.population` (exact population minimisers),
:mod:`auxdpo.harness.oracle.finite` (n sampled pairs, the trainer) or :mod:`auxdpo.harness.oracle.fullbatch`
(n sampled pairs, exact empirical minimisers), all built on :mod:`auxdpo.harness.oracle.cells`. Rows
(one per seed × capacity × β × method) are aggregated as mean ± std over seeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from auxdpo.harness.oracle.designs import DESIGNS
from auxdpo.harness.oracle.finite import finite_cell
from auxdpo.harness.oracle.fullbatch import fullbatch_cell
from auxdpo.harness.oracle.metrics import METRICS
from auxdpo.harness.oracle.mmlu import CAPACITIES as MMLU_CAPACITIES
from auxdpo.harness.oracle.mmlu import MmluTaskConfig, build_mmlu_task
from auxdpo.harness.oracle.population import population_cell
from auxdpo.harness.oracle.sampling import FINITE_AUX_MODES, FiniteConfig
from auxdpo.harness.oracle.solvers import AUX_MODES
from auxdpo.harness.oracle.tasks import TokenTaskConfig, build_token_task
from auxdpo.losses import PAPER_METHODS
from auxdpo.train.config import parse_capacity

__all__ = ["BASE_METHODS", "OracleConfig", "aggregate", "run_oracle"]

BASE_METHODS = PAPER_METHODS
FAMILIES = ("tokens", "mmlu-choice")


@dataclass
class OracleConfig:
    """Everything an oracle run depends on (saved beside its results)."""

    family: str = field(default="tokens", metadata={"help": f"task family, one of {FAMILIES}"})
    regime: str = field(default="population", metadata={
        "help": "population (soft labels, exact minimisers) or finite (n sampled pairs, the "
                "trainer itself; options in `finite`)"})
    design: str = field(default="anti-aligned", metadata={"help": f"one of {DESIGNS}"})
    capacities: list[str] = field(default_factory=lambda: ["norm"], metadata={
        "help": "trainable sets: norm, lora:<r>, last-block, full, regex:<p>"})
    betas: list[float] = field(default_factory=lambda: [100.0], metadata={"help": "KL β"})
    seeds: int = field(default=10, metadata={"help": "number of seeds"})
    first_seed: int = field(default=0, metadata={"help": "seeds are first_seed, +1, ..."})
    methods: list[str] = field(default_factory=lambda: list(BASE_METHODS),
                               metadata={"help": f"subset of {BASE_METHODS}"})
    aux_modes: list[str] = field(default_factory=lambda: ["projection"], metadata={
        "help": f"AuxDPO constraint modes, subset of {AUX_MODES}"})
    lambdas: list[float] = field(default_factory=lambda: [1e4], metadata={
        "help": "λ of the global mode's penalty λ‖A_ρδ‖² (a sweep when several)"})
    anti_factor: float = field(default=1000.0, metadata={"help": "K of the anti-aligned design"})
    skew: float = field(default=1.0, metadata={"help": "σ of the skew design"})
    dpop_lambda: float = field(default=50.0, metadata={"help": "DPOP's λ"})
    max_iter: int = field(default=300, metadata={"help": "L-BFGS iterations per solve"})
    precondition_floor: float = field(default=1e-9, metadata={
        "help": "relative eigenvalue floor of the solvers' preconditioners (LoRA: 1e-3)"})
    restarts: int = field(default=1, metadata={
        "help": "solver rounds of max_iter iterations each; every later round re-centres and "
                "re-preconditions at the current point (LoRA: 4)"})
    restart_floor: float | None = field(default=None, metadata={
        "help": "eigenvalue floor of the later rounds' preconditioners (default: "
                "precondition_floor)"})
    relinearise: int = field(default=0, metadata={
        "help": "population regime: also run AuxDPO (projection) re-solved this many rounds, "
                "each with the null space taken at the previous round's θ (row auxdpo-relin; "
                "0: not run; docs/oracle.md, 'Relinearised AuxDPO')"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads during the run"})
    task: TokenTaskConfig = field(default_factory=TokenTaskConfig,
                                  metadata={"help": "tokens task shape"})
    mmlu: MmluTaskConfig = field(default_factory=MmluTaskConfig,
                                 metadata={"help": "mmlu-choice task shape"})
    finite: FiniteConfig = field(default_factory=FiniteConfig,
                                 metadata={"help": "finite-sample regime options"})

    def __post_init__(self):
        if isinstance(self.task, dict):
            self.task = TokenTaskConfig(**self.task)
        if isinstance(self.mmlu, dict):
            self.mmlu = MmluTaskConfig(**self.mmlu)
        if isinstance(self.finite, dict):
            self.finite = FiniteConfig(**self.finite)
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.regime not in ("population", "finite"):
            raise ValueError(f"regime must be population or finite, got {self.regime!r}")
        if (self.regime == "finite" and self.family != "tokens"
                and self.finite.solver != "full-batch"):
            raise ValueError("regime finite with the trainer is implemented for family tokens "
                             "only; use finite solver full-batch for mmlu-choice")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {self.design!r}")
        bad = [m for m in self.methods if m not in BASE_METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {BASE_METHODS}, got {bad}")
        modes = (FINITE_AUX_MODES if self.regime == "finite" and self.finite.solver == "trainer"
                 else AUX_MODES)
        if [m for m in self.aux_modes if m not in modes] or not self.aux_modes:
            raise ValueError(f"aux_modes must be a non-empty subset of {modes}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if self.relinearise < 0:
            raise ValueError(f"relinearise must be >= 0, got {self.relinearise}")
        if self.relinearise and (self.regime != "population" or "auxdpo" not in self.methods):
            raise ValueError("relinearise needs the population regime and method auxdpo")
        if self.seeds < 1 or not self.capacities or not self.betas:
            raise ValueError("need seeds >= 1, at least one capacity and one beta")
        for spec in self.capacities:
            if self.family == "mmlu-choice" and spec not in MMLU_CAPACITIES:
                raise ValueError(f"capacity {spec!r} is not available for family mmlu-choice;"
                                 f" choose from {MMLU_CAPACITIES}")
            if self.family == "tokens" and spec != "norm":
                parse_capacity(spec)        # ValueError naming the spec and the choices
        if any(not (math.isfinite(b) and b > 0) for b in self.betas):
            raise ValueError(f"betas must be positive, got {self.betas}")
        if any(not lam > 0 for lam in self.lambdas) or not self.lambdas:
            raise ValueError(f"lambdas must be positive, got {self.lambdas}")


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std (over seeds, ddof 0) of every metric per (capacity, β, method), and per n
    when the rows carry several pair counts (an n-sweep)."""
    groups: dict[tuple, list[dict]] = {}
    sweep = len({row.get("pairs") for row in rows}) > 1
    for row in rows:
        key = (row["capacity"], row["beta"], row["method"], row.get("pairs") if sweep else None)
        groups.setdefault(key, []).append(row)
    out = []
    for (capacity, beta, method, pairs), members in groups.items():
        entry = {"capacity": capacity, "beta": beta, "method": method, "dim": members[0]["dim"],
                 "responses": members[0]["responses"], "seeds": len(members),
                 "capped": sum(bool(r.get("capped")) for r in members)}
        if pairs is not None:
            entry["pairs"] = pairs
        for metric in METRICS:
            values = torch.tensor([r[metric] for r in members], dtype=torch.float64)
            entry[metric] = {"mean": float(values.mean()),
                             "std": float(values.std(unbiased=False))}
        out.append(entry)
    return out


def run_oracle(config: OracleConfig, log=lambda message: None, on_partial=None) -> dict:
    """Run every cell; returns ``{"config", "rows", "summary", "gap_closed", "seconds"}``.

    ``gap_closed`` maps each method (and rlhf_local) to mean ± std for the first capacity and
    first β: the headline cell. ``on_partial(result)``, if given, receives the same dictionary
    (over the rows done so far) after every (seed, capacity) cell.
    """
    start = time.time()
    rows: list[dict] = []
    threads = torch.get_num_threads()
    # Tiny models: intra-op threading costs far more than it saves (20× slower on 2 busy cores).
    torch.set_num_threads(config.threads)
    try:
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            task = (build_mmlu_task(config.mmlu, seed) if config.family == "mmlu-choice"
                    else build_token_task(config.task, seed))
            for capacity_spec in config.capacities:
                if config.regime == "finite" and config.finite.solver == "full-batch":
                    rows += fullbatch_cell(config, task, capacity_spec, seed, log)
                elif config.regime == "finite":
                    rows += finite_cell(config, task, capacity_spec, seed, log)
                else:
                    rows += population_cell(config, task, capacity_spec, seed, log)
                if on_partial is not None:
                    on_partial(_result(config, rows, start))
    finally:
        torch.set_num_threads(threads)
    return _result(config, rows, start)


def _result(config: OracleConfig, rows: list[dict], start: float) -> dict:
    summary = aggregate(rows)
    head = (config.capacities[0], config.betas[0])
    headline = {e["method"]: e["gap_closed"] for e in summary
                if (e["capacity"], e["beta"]) == head and e["method"] not in ("base", "rlhf")}
    return {"config": asdict(config), "rows": rows, "summary": summary,
            "gap_closed": headline, "seconds": time.time() - start}
