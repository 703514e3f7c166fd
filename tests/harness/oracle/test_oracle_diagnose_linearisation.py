"""`auxdpo diagnose`'s local check against the oracle's population cell
(benchmarks/diagnose_linearisation.py): on `norm` the linearisation error along the local RLHF
step under r* is small at β = 100 and grows as β falls."""

import sys
from pathlib import Path

from auxdpo.harness.oracle.tasks import TokenTaskConfig
from oracle_fixtures import TOKEN_TASK

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))


def test_quick_path_norm_is_local_at_large_beta_and_less_so_at_small():
    from diagnose_linearisation import quick

    result = quick(task=TokenTaskConfig(**TOKEN_TASK), betas=(1.0, 100.0), seed=0,
                   log=lambda message: None)
    error = {p["beta"]: p["linearisation_error"] for p in result["points"]}
    assert error[100.0] < 0.05
    assert error[1.0] > error[100.0]
    for p in result["points"]:                     # the oracle's own rows came with it
        assert {"rlhf_local", "dpo", "auxdpo", "local_gap"} <= p.keys()
    assert sum(result["summary"]["count"].values()) == 2
