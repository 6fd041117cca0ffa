from __future__ import annotations

from tests.simulated import simulator_fixture

# A simulator with no generated recordings: each test adds exactly what it needs.
sim = simulator_fixture("sim", recordings=0, seed=3, min_size=10_000, max_size=300_000)
# A simulator with a generated mix: statuses, audio, disabled bucket, past retention.
busy_sim = simulator_fixture("busy_sim", recordings=24, seed=5, min_size=10_000, max_size=400_000)
