"""Heartbeats (issue 12), healthchecks.io's conventions against a real local HTTP server:
`/start` when a run starts, the bare URL on exit 0, `/<exit code>` otherwise, the one-line
summary or reason as the POST body (redacted, bounded); a ping server that is down or failing
changes nothing about the run."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.notify import MAX_BODY, Heartbeat
from pipeline.redact import Redactor
from tests.helpers import config_dict, run_cli, to_toml

CHECK = "/ping/5f1b6a4e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"


class PingServer:
    """A monitor: records (method, path, body) of each request; answers `status`."""

    def __init__(self, status: int = 200):
        self.pings: list[tuple[str, str, bytes]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.pings.append(("POST", self.path, self.rfile.read(length)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{CHECK}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _config(tmp_path, sim, url: str, **notify):
    raw = config_dict(tmp_path, sim)
    raw["notify"] = {"ping_url": url, **notify}
    path = tmp_path / "config.toml"
    path.write_text(to_toml(raw))
    return path


def test_a_successful_run_pings_start_then_success(sim, tmp_path):
    """Exit 0: POST <url>/start, then POST <url> with the run's one-line summary."""
    sim.add_recording(size=30_000, audio=True)
    with PingServer() as monitor:
        result = run_cli("run", "--config", str(_config(tmp_path, sim, monitor.url)))
    assert result.returncode == 0, result.stderr
    assert [(method, path) for method, path, _ in monitor.pings] == [("POST", f"{CHECK}/start"), ("POST", CHECK)]
    body = monitor.pings[1][2].decode()
    assert body.startswith("run ") and "2 files archived" in body and "\n" not in body


def test_a_failed_run_pings_its_exit_code_with_the_reason(sim, tmp_path):
    """Exit 1 (a file RealtimeKit no longer serves): POST <url>/start, then <url>/1 with the
    reason; the API token never appears in a body."""
    sim.add_recording(size=30_000, audio=False)
    sim.add_recording(size=30_000, audio=False, stopped_time=sim.now() - timedelta(days=8))  # lost
    with PingServer() as monitor:
        result = run_cli("run", "--config", str(_config(tmp_path, sim, monitor.url)), "--json")
    assert result.returncode == 1, result.stderr
    paths = [path for _, path, _ in monitor.pings]
    assert paths == [f"{CHECK}/start", f"{CHECK}/1"]
    body = monitor.pings[1][2].decode()
    assert body and "lost" in body
    assert all(sim.token.encode() not in ping[2] for ping in monitor.pings)


def test_a_ping_server_that_is_down_changes_nothing(sim, tmp_path):
    """Nothing listens at the ping URL: the run archives the same, exits 0, prints the same
    JSON counts, and says once per ping, as a warning, that the ping failed."""
    sim.add_recording(size=30_000, audio=True)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}{CHECK}"
    result = run_cli("run", "--config", str(_config(tmp_path, sim, url, attempts=2, timeout=2)), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_archived"] == 2 and summary["error"] is None
    assert result.stderr.count("heartbeat /start failed") == 1 and result.stderr.count("heartbeat / failed") == 1
    assert CHECK not in result.stderr  # the check's URL is its secret: redacted
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("status", [404, 500])
def test_a_failing_ping_is_a_warning_and_returns_false(status):
    """A monitor answering an error: the heartbeat says False (after its bounded retries for
    5xx, at once for 4xx), raises nothing; the body is redacted and cut to MAX_BODY bytes."""
    with PingServer(status=status) as monitor:
        heartbeat = Heartbeat(monitor.url, timeout=2, attempts=3, backoff_seconds=0.01,
                              redact=Redactor(["sekret-value-123456"]))
        assert heartbeat.finish(3, "reason sekret-value-123456 " + "x" * (2 * MAX_BODY)) is False
    assert len(monitor.pings) == (3 if status == 500 else 1)
    assert all(path == f"{CHECK}/3" for _, path, _ in monitor.pings)
    body = monitor.pings[0][2]
    assert body.startswith(b"reason *** x") and len(body) == MAX_BODY
