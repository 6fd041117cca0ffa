from __future__ import annotations

import pytest

from tests.servers.postgres import start_postgres
from tests.simulated import simulator_fixture

# A simulator with no generated recordings: each test adds exactly what it needs.
sim = simulator_fixture("sim", recordings=0, seed=3, min_size=10_000, max_size=300_000)
# A simulator with a generated mix: statuses, audio, disabled bucket, past retention.
busy_sim = simulator_fixture("busy_sim", recordings=24, seed=5, min_size=10_000, max_size=400_000)


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL cluster on a free loopback port (fails loudly when it cannot start)."""
    cluster = start_postgres()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """The URL of a fresh PostgreSQL database, migrated to this code's schema."""
    from pipeline.ledger.postgres import migrate

    url = postgres.new_database()
    migrate(url)
    return url
