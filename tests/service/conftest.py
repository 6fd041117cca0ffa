from __future__ import annotations

from tests.simulated import simulator_fixture

sim = simulator_fixture("sim", recordings=0, seed=11, min_size=10_000, max_size=200_000)
