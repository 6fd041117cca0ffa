"""`simulate`: the command's plain functions (add_arguments/run in a real process, serve() in a
thread), no CLI imports."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import tomllib

import httpx
import pytest

from pipeline.simulator import SimulateError, serve
from tests.simulator.helpers import REPO, rec_url, web


def test_cli_prints_a_source_block_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulate", "--port", "0", "--recordings", "5", "--seed", "9",
         "--max-size", "128KiB"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        lines = [process.stdout.readline() for _ in range(5)]
        config = tomllib.loads("".join(lines))["source"]
        assert set(config) == {"base_url", "account_id", "app_id", "api_token"}
        url = f"{config['base_url']}/accounts/{config['account_id']}/realtime/kit/{config['app_id']}/recordings"
        answer = web.get(url, headers={"Authorization": f"Bearer {config['api_token']}"})
        assert answer.status_code == 200 and answer.json()["paging"]["total_count"] == 5
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


def test_serve_checks_its_settings_calls_on_ready_and_stops_on_request():
    """serve() is what the CLI's `simulate` calls (no CLI imports): bad settings are one
    SimulateError line naming the option, on_ready gets the listening simulator, and setting
    `stop` ends it (off the main thread, where signals cannot)."""
    for settings, option in (({"port": 70000}, "--port"), ({"min_size": 10, "max_size": 5}, "--min-size"),
                             ({"url_lifetime": float("nan")}, "--url-lifetime"), ({"days": -1}, "--days")):
        with pytest.raises(SimulateError, match=option):
            serve(**settings)
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=serve, kwargs={"port": 0, "recordings": 3, "on_ready": ready.put, "stop": stop})
    thread.start()
    try:
        sim = ready.get(timeout=10)
        with httpx.Client(timeout=10) as client:
            answer = client.get(rec_url(sim), headers={"Authorization": f"Bearer {sim.token}"})
        assert answer.json()["paging"]["total_count"] == 3
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.get(rec_url(sim))
