"""Hand-made run results and an injectable fake executor for the protocol tests."""

from __future__ import annotations

from auxdpo.harness.protocol.recipe import RunSpec, recipe_from_dict

METHOD_GAIN = {"dpo": 0.02, "auxdpo": 0.06, "ipo": -0.01, "dpop": 0.04}
CAPACITY_GAIN = {"50%": 0.0, "100%": 0.01, "lora:4": -0.005}
BASE = {"mmlu-pro": 0.50, "rewardbench2": 0.40}


def small_recipe(**grid):
    values = {"name": "fake", "grid": {"methods": ["dpo", "auxdpo", "ipo", "dpop"],
                                       "settings": ["id", "ood"],
                                       "datasets": ["mmlu-pro", "rewardbench2"],
                                       "capacities": ["50%", "100%"], "seeds": 2, **grid}}
    return recipe_from_dict(values)


def accuracy(run: RunSpec) -> float:
    """base + method gain + capacity gain + 0.01·seed (+0.005 for OOD): exact, hand-checkable."""
    return (BASE[run.dataset] + METHOD_GAIN[run.method] + CAPACITY_GAIN[run.capacity]
            + 0.01 * run.seed + (0.005 if run.setting == "ood" else 0.0))


def fake_metrics(run: RunSpec) -> dict:
    value = accuracy(run)
    metrics = {"pairwise": {"n_pairs": 10, "logp_accuracy": value,
                            "implicit_reward_accuracy": value + 0.1}}
    if run.dataset == "mmlu-pro":
        metrics["mmlu_pro"] = {"options": {"overall": value,
                                           "per_category": {"law": value, "math": value + 0.1},
                                           "counts": {"law": 5, "math": 5}}}
    else:
        metrics["rewardbench2"] = {"logp": {"mean": value - 0.1, "subsets": {}, "counts": {}},
                                   "implicit_reward": None}
    return {"metrics": metrics}


def fake_base(dataset: str) -> dict:
    metrics = {"pairwise": {"n_pairs": 10, "logp_accuracy": BASE[dataset],
                            "implicit_reward_accuracy": None}}
    if dataset == "mmlu-pro":
        metrics["mmlu_pro"] = {"options": {"overall": 0.5,
                                           "per_category": {"law": 0.5, "math": 0.0},
                                           "counts": {"law": 5, "math": 5}}}
    else:
        metrics["rewardbench2"] = {"logp": {"mean": 0.30, "subsets": {}, "counts": {}},
                                   "implicit_reward": None}
    return {"metrics": metrics, "scores": {}}


class Interrupting:
    """A run function that raises on its (k+1)-th call, as a crash or Ctrl-C would."""

    def __init__(self, fail_after: int | None = None, exc=KeyboardInterrupt):
        self.fail_after, self.exc, self.calls = fail_after, exc, []

    def __call__(self, run: RunSpec) -> dict:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise self.exc("interrupted")
        self.calls.append(run.run_id)
        return fake_metrics(run)
