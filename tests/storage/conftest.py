"""Every test that takes `rig` runs against every registered storage type, each against its
real server (see the RIGS of tests/storage/rig_<backend>.py, which define the fixtures)."""

from __future__ import annotations

import importlib
import uuid

import pytest

from storage import target_types
from tests.storage.rig import Rig

RIG_MODULES = ("rig_local", "rig_s3", "rig_azure", "rig_gcs", "rig_sftp")

# Every server a rig reaches, by id (a type, or "<type>-<server>" for a second server of a type
# where one cannot decide every case), and the fixture that starts it.
RIGS: dict[str, type[Rig]] = {}
RIG_FIXTURES: dict[str, str] = {}
for _name in RIG_MODULES:
    _module = importlib.import_module(f"tests.storage.{_name}")
    for _server, _rig_class in _module.RIGS.items():
        RIGS[_server] = _rig_class
        RIG_FIXTURES[_server] = _rig_class.fixture or f"rig_{_rig_class.type}"
        globals()[RIG_FIXTURES[_server]] = getattr(_module, RIG_FIXTURES[_server])

# Registered types without a conformance rig; test_every_registered_type_has_a_rig fails on any.
MISSING_RIGS: list[str] = [t for t in target_types() if t not in {r.type for r in RIGS.values()}]


def _rig_fixture(name: str, servers: list[str]):
    @pytest.fixture(name=name, params=servers)
    def fixture(request):
        return request.getfixturevalue(RIG_FIXTURES[request.param])
    return fixture


# Every server of every registered type.
rig = _rig_fixture("rig", list(RIGS))
# Types with credentials a server can refuse: a local folder has none (test_conformance checks that).
credentialed_rig = _rig_fixture("credentialed_rig", [s for s, r in RIGS.items() if r.has_credentials])
# Servers that enforce the adapter's create-only write (see Rig.enforces_create_only).
create_only_rig = _rig_fixture("create_only_rig", [s for s, r in RIGS.items() if r.enforces_create_only])


@pytest.fixture
def prefix() -> str:
    """A unique prefix per test, so tests never see each other's objects."""
    return f"conformance/{uuid.uuid4().hex[:12]}"
