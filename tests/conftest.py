from __future__ import annotations

import pytest

from pipeline.simulator import Simulator


@pytest.fixture
def sim():
    """A simulator with no generated recordings: each test adds exactly what it needs."""
    with Simulator(recordings=0, seed=3, min_size=10_000, max_size=300_000) as simulator:
        yield simulator


@pytest.fixture
def busy_sim():
    """A simulator with a generated mix: statuses, audio, disabled bucket, past retention."""
    with Simulator(recordings=24, seed=5, min_size=10_000, max_size=400_000) as simulator:
        yield simulator
