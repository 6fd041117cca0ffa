"""A running `rtk-archive serve` for tests: the real service (uvicorn, Starlette, the SQLite
ledger, the worker) in a thread of the test process on a free loopback port, configured
against a simulator whose well-known URL serves the webhook key."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from pipeline.config import parse_config
from pipeline.service.server import Service, run_service
from pipeline.simulator.webhooks import WELL_KNOWN_PATH
from tests.helpers import config_dict


def serve_config(tmp_path: Path, sim, *, ledger: Path | None = None, **serve):
    raw = config_dict(tmp_path, sim)
    if ledger is not None:
        raw["ledger"]["path"] = str(ledger)
    raw["serve"] = {"reconcile_every": "0", **serve}
    raw["webhook"] = {"public_key_url": sim.origin + WELL_KNOWN_PATH, "key_refresh_interval": 0}
    return raw


@contextlib.contextmanager
def running_service(tmp_path: Path, sim, *, workers: int = 0, ledger: Path | None = None,
                    **serve) -> Iterator[Service]:
    config = parse_config(serve_config(tmp_path, sim, ledger=ledger, **serve), environ={})
    started: list[Service] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_service(config, workers=workers, host="127.0.0.1", port=0, on_ready=started.append)
        except BaseException as exc:  # handed to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not started and not failure and time.monotonic() < deadline:
        time.sleep(0.05)
    if failure:
        raise failure[0]
    assert started, "the service did not start within 30 s"
    service = started[0]
    try:
        yield service
    finally:
        service.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the service did not stop within 60 s"
    if failure:
        raise failure[0]


def hints(ledger: Path) -> list[dict]:
    """The hints table, read by a connection of its own (as another process would); none while
    the service has not created the ledger yet."""
    if not ledger.exists():
        return []
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM hints ORDER BY received_at")]
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return []  # the file exists, its schema is not written yet
    finally:
        db.close()


def metric(service: Service, outcome: str) -> float:
    text = httpx.get(service.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(f'rtk_archive_webhooks_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no webhook counter for {outcome!r} in /metrics")


def wait_for(condition, timeout: float = 60.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} was not met within {timeout} s")
