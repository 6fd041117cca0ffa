"""Every test that takes `rig` runs against every registered storage type, each against its
real server (see tests/storage/rig_<type>.py, which defines the fixture `rig_<type>`)."""

from __future__ import annotations

import importlib
import uuid

import pytest

from storage.registry import target_types

# Registered types whose rig module is missing; test_every_type_has_a_rig fails on any.
MISSING_RIGS: list[str] = []

for _type in target_types():
    try:
        _module = importlib.import_module(f"tests.storage.rig_{_type}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tests.storage.rig_{_type}":
            raise
        MISSING_RIGS.append(_type)
        continue
    globals()[f"rig_{_type}"] = getattr(_module, f"rig_{_type}")


# A second server for a type, where one server cannot decide every case (see its rig module).
EXTRA_RIGS = {"gcs-fake-gcs-server": "rig_gcs_fake"}
globals()["rig_gcs_fake"] = importlib.import_module("tests.storage.rig_gcs").rig_gcs_fake
RIG_FIXTURES = {**{t: f"rig_{t}" for t in target_types() if t not in MISSING_RIGS}, **EXTRA_RIGS}


def _rig_fixture(name: str, params: list[str]):
    @pytest.fixture(name=name, params=params)
    def fixture(request):
        return request.getfixturevalue(RIG_FIXTURES[request.param])
    return fixture


# Every server of every registered type.
rig = _rig_fixture("rig", list(RIG_FIXTURES))
# Types with credentials a server can refuse: a local folder has none (test_conformance checks that).
credentialed_rig = _rig_fixture("credentialed_rig", [p for p in RIG_FIXTURES if p != "local"])
# Servers that enforce create-only writes. gcp-storage-emulator ignores ifGenerationMatch, so
# GCS's create-only write is decided on fake-gcs-server.
create_only_rig = _rig_fixture("create_only_rig", [p for p in RIG_FIXTURES if p != "gcs"])


@pytest.fixture
def prefix() -> str:
    """A unique prefix per test, so tests never see each other's objects."""
    return f"conformance/{uuid.uuid4().hex[:12]}"
