"""The offsets tests' shared world: a tiny float64 GPT-2, its preference rows and A built
column by column (``offsets_fixtures.store_world``), once per module. A module that needs
another world defines its own ``world`` fixture, which takes precedence."""

import pytest

from offsets_fixtures import store_world


@pytest.fixture(scope="module")
def world():
    return store_world()
