"""Helpers for the simulator tests: the answer shapes copied from the API reference, a plain
HTTP client for file URLs and control endpoints, and shortcuts to the simulator's answers."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import httpx

from pipeline.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]

# Key sets copied from the API reference's examples.
LIST_ITEM_KEYS = [
    "id", "audio_download_url", "download_url", "download_url_expiry", "file_size", "invoked_time",
    "output_file_name", "session_id", "started_time", "status", "stopped_time", "meeting",
    "recording_duration", "storage_config",
]  # fmt: skip
DETAIL_KEYS = [
    "id", "audio_download_url", "download_url", "download_url_expiry", "file_size", "invoked_time",
    "output_file_name", "session_id", "started_time", "status", "stopped_time", "recording_duration",
    "start_reason", "stop_reason", "storage_config",
]  # fmt: skip
ACTIVE_KEYS = DETAIL_KEYS[:12]
MEETING_KEYS = [
    "id", "created_at", "updated_at", "live_stream_on_start", "persist_chat", "record_on_start",
    "session_keep_alive_time_in_secs", "status", "summarize_on_end", "title",
]  # fmt: skip
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# One client without credentials for file URLs and control endpoints (building a client per call
# costs tens of milliseconds in TLS setup, even for plain HTTP); conftest closes it at the end.
web = httpx.Client(timeout=30, trust_env=False)


def rec_url(sim: Simulator, suffix: str = "") -> str:
    return f"{sim.base_url}/accounts/{sim.account_id}/realtime/kit/{sim.app_id}/recordings{suffix}"


def list_all(http: httpx.Client, sim: Simulator, **params) -> dict:
    params.setdefault("per_page", 100)
    response = http.get(rec_url(sim), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def fresh_items(sim: Simulator, count: int = 1) -> list[dict]:
    """get-one answers of UPLOADED recordings whose URLs work (bucket enabled, not expired)."""
    found = []
    for raw in sim.recordings:
        if raw["status"] != "UPLOADED":
            continue
        answer = sim_detail(sim, raw["id"])
        expiry = answer["download_url_expiry"]
        if answer["download_url"] and datetime.fromisoformat(expiry) > sim.now():
            found.append(answer)
            if len(found) == count:
                return found
    raise AssertionError("not enough downloadable recordings")


def uploaded(sim: Simulator) -> dict:
    return fresh_items(sim, 1)[0]


def sim_detail(sim: Simulator, recording_id: str) -> dict:
    answer = web.get(rec_url(sim, f"/{recording_id}"), headers={"Authorization": f"Bearer {sim.token}"})
    return answer.json()["data"]
