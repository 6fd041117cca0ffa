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


@pytest.fixture(params=target_types())
def rig(request):
    return request.getfixturevalue(f"rig_{request.param}")


@pytest.fixture
def prefix() -> str:
    """A unique prefix per test, so tests never see each other's objects."""
    return f"conformance/{uuid.uuid4().hex[:12]}"
