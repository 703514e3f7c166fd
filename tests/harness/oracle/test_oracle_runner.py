"""OracleConfig validation and the runner's aggregation."""

import pytest

from auxdpo.harness.oracle.runner import aggregate


def test_method_names_and_config_validation():
    from auxdpo.harness.oracle.cells import method_names
    from auxdpo.harness.oracle.runner import OracleConfig

    names = [n for n, _, _ in method_names(OracleConfig())]
    assert names == ["dpo", "ipo", "dpop", "auxdpo"]
    sweep = OracleConfig(aux_modes=["projection", "global"], lambdas=[1.0, 100.0])
    assert [n for n, _, _ in method_names(sweep)][3:] == [
        "auxdpo-projection", "auxdpo-global-lam1", "auxdpo-global-lam100"]
    for bad in ({"design": "nope"}, {"regime": "nope"}, {"betas": [0.0]},
                {"capacities": ["bogus"]}, {"methods": ["ppo"]}):
        with pytest.raises(ValueError):
            OracleConfig(**bad)


def _row(seed, method, gap, pairs=None):
    row = {"seed": seed, "capacity": "norm", "beta": 10.0, "method": method, "dim": 16,
           "responses": 9, "capped": seed == 1, "gap_closed": gap, "reward": 2.0 * gap,
           "kl": 0.5, "reversal": 0.0, "heldout_acc": 1.0}
    if pairs is not None:
        row["pairs"] = pairs
    return row


def test_aggregate_means_and_population_stds_by_hand():
    rows = [_row(0, "dpo", 1.0), _row(1, "dpo", 3.0), _row(0, "auxdpo", 0.5)]
    dpo, aux = aggregate(rows)
    assert (dpo["method"], dpo["seeds"], dpo["capped"]) == ("dpo", 2, 1)
    assert dpo["gap_closed"] == {"mean": 2.0, "std": 1.0}          # ddof 0: √((1 + 1)/2)
    assert dpo["reward"] == {"mean": 4.0, "std": 2.0} and dpo["kl"]["std"] == 0.0
    assert aux["seeds"] == 1 and aux["gap_closed"] == {"mean": 0.5, "std": 0.0}
    assert "pairs" not in dpo


def test_aggregate_splits_an_n_sweep_by_pairs():
    rows = [_row(0, "dpo", 1.0, 10), _row(1, "dpo", 3.0, 10), _row(0, "dpo", 5.0, 20)]
    small, large = aggregate(rows)
    assert (small["pairs"], small["seeds"], small["gap_closed"]["mean"]) == (10, 2, 2.0)
    assert (large["pairs"], large["seeds"], large["gap_closed"]["mean"]) == (20, 1, 5.0)
