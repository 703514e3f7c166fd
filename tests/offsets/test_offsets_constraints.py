"""The constraint modes' shared checks (auxdpo.offsets.constraints): counting rows once over
batches, the projection's memory bound, the configuration's refusals."""

import pytest
import torch

from auxdpo.offsets.constraints import (
    MODES,
    check_projection_memory,
    first_occurrences,
    validate_offsets_config,
)


def test_first_occurrences_counts_each_row_once_over_batches():
    seen = torch.zeros(6, dtype=torch.bool)
    first = first_occurrences(torch.tensor([2, 0, 2, 5]), seen)
    second = first_occurrences(torch.tensor([5, 1, 1, 0, 3]), seen)
    assert first.tolist() == [True, True, False, True]
    assert second.tolist() == [False, True, False, False, True]
    assert seen.tolist() == [True, True, True, True, False, True]


def test_projection_memory_is_d_times_2n_items():
    assert check_projection_memory(100, 8, torch.float64, 10**6) == 100 * 16 * 8
    assert check_projection_memory(100, 8, torch.float32, 100 * 16 * 4) == 100 * 16 * 4
    with pytest.raises(ValueError, match="mode='global'"):
        check_projection_memory(100, 8, torch.float32, 100 * 16 * 4 - 1)


@pytest.mark.parametrize("args,field", [
    ((0, "global", 1.0, 0.0, 1, None, 0), "num_examples"),
    ((4, "local", 1.0, 0.0, 1, None, 0), "mode"),
    ((4, "global", -1.0, 0.0, 1, None, 0), "lambda_null"),
    ((4, "batch", 1.0, 0.1, 0, None, 0), "amp_sign"),
    ((4, "global", 1.0, 0.1, 1, None, 0), "lambda_amp"),
    ((4, "projection", 1.0, 0.0, 1, 2.0, 0), "delta_cap"),
    ((4, "global", 1.0, 0.0, 1, -1.0, 0), "delta_cap"),
    ((4, "global", 1.0, 0.0, 1, None, -1), "recompute_every"),
])
def test_bad_configurations_name_their_field(args, field):
    with pytest.raises(ValueError, match=field):
        validate_offsets_config(*args)


def test_good_configurations_pass():
    for mode in MODES:
        validate_offsets_config(4, mode, 1.0, 0.5 if mode == "batch" else 0.0, -1,
                                None if mode == "projection" else 1.0, 3)
