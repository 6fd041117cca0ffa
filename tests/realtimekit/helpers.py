"""Helpers for the API client tests: clients against the simulator (fast retries, waits
recorded) or against an httpx MockTransport, and views of the simulator's request log."""

from __future__ import annotations

import httpx

from pipeline.realtimekit import RealtimeKitClient
from pipeline.simulator import Simulator

TOKEN_LOGGER = "rtk_archive.api"


def make_client(sim: Simulator, *, token: str | None = None, **options) -> RealtimeKitClient:
    """A client with fast retries; `sleeps` records every wait instead of sleeping it."""
    options.setdefault("backoff_initial", 0.001)
    options.setdefault("backoff_max", 0.01)
    client = RealtimeKitClient(
        base_url=sim.base_url,
        account_id=sim.account_id,
        app_id=sim.app_id,
        api_token=token or sim.token,
        **options,
    )
    client.sleeps = []  # type: ignore[attr-defined]
    client.sleep = client.sleeps.append  # type: ignore[attr-defined]
    return client


def api_requests(sim: Simulator) -> list:
    return [r for r in sim.requests if r.kind == "api"]


def ids_with(sim: Simulator, *statuses: str) -> set[str]:
    return {r["id"] for r in sim.recordings if r["status"] in statuses}


def mock_client(handler, **options) -> RealtimeKitClient:
    options.setdefault("backoff_initial", 0.001)
    options.setdefault("backoff_max", 0.01)
    client = RealtimeKitClient(
        base_url="https://api.example.test/client/v4",
        account_id="acc",
        app_id="app",
        api_token="tok-SECRET-123",
        transport=httpx.MockTransport(handler),
        **options,
    )
    client.sleep = lambda seconds: None
    return client
