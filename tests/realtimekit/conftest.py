"""Fixtures for the API client tests: a simulator with a generated mix and a client for it."""

from __future__ import annotations

import pytest

from tests.realtimekit.helpers import make_client
from tests.simulated import simulator_fixture

sim = simulator_fixture("sim", recordings=20, seed=11)


@pytest.fixture
def client(sim):
    with make_client(sim) as api_client:
        yield api_client
