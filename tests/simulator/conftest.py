"""Fixtures for the simulator tests: a simulator with a generated mix and an authorised client."""

from __future__ import annotations

import httpx
import pytest

from tests.simulated import simulator_fixture
from tests.simulator.helpers import web


@pytest.fixture(scope="session", autouse=True)
def _close_web_client():
    yield
    web.close()


sim = simulator_fixture("sim", recordings=20, seed=7)


@pytest.fixture
def http(sim):
    with httpx.Client(headers={"Authorization": f"Bearer {sim.token}"}, timeout=10, trust_env=False) as client:
        yield client
