"""`rtk-archive serve` end to end: the simulator makes recordings appear and delivers signed
webhooks as they finish; the service records them and its worker archives them through the
archive engine (fetched again from the API, verified at the target, in the ledger and the
audit trail) within seconds, not at the next nightly run."""

from __future__ import annotations

import signal
import subprocess
import threading
import tomllib

import httpx

from pipeline.config import parse_config
from pipeline.service.server import run_service
from pipeline.audit import verify_chain
from pipeline.simulator.webhooks import WebhookSender
from tests.helpers import cli_command, cli_env, run_cli, to_toml
from tests.service.helpers import hints, running_service, serve_config, wait_for

PATH = "/webhooks/realtimekit"


def done_ids(tmp_path) -> set[str]:
    """Announced recordings whose hint the worker settled as done (archived everywhere)."""
    return {r["subject_id"] for r in hints(tmp_path / "ledger.db") if r["state"] == "done" and r["kind"] == "recording"}


def archived_ids(tmp_path) -> set[str]:
    """Recordings whose video is at the local target (read while the service writes there: a
    temporary that vanishes mid-walk means "look again")."""
    folder = tmp_path / "nas"
    try:
        return {p.parent.name for p in folder.rglob("video-*")}  # temporaries are hidden: ".video-..."
    except FileNotFoundError:
        return set()


def test_new_recordings_are_archived_within_seconds_of_their_uploaded_webhook(sim, tmp_path):
    """With --new-every, new UPLOADED recordings appear; each one's webhook leads to its file at
    the target (the whole bytes), its hint done, and its lines in the audit trail, without any
    listing run (reconcile is off); the transcript, summary and chat events that follow are
    accepted (202). The generous timeout is not a timing claim."""
    with running_service(tmp_path, sim, workers=2) as service, \
            WebhookSender(sim, service.url + PATH, new_every=0.5, first_retry=0.2) as webhooks:
        wait_for(lambda: len(done_ids(tmp_path)) >= 3, timeout=90, what="three new recordings archived")
    announced = {d.subject for d in webhooks.deliveries if d.delivered}
    # The session artifacts announced with them are accepted as work (tests/service/test_artifacts.py).
    artifacts = [d for d in webhooks.deliveries if d.event.startswith("meeting.")]
    assert artifacts and all(d.statuses == [202] for d in artifacts)
    # Stopping may leave a batch's last recording half done (resumed at the next start): count
    # the settled ones.
    done = done_ids(tmp_path)
    assert len(done) >= 3 and done <= announced and done <= archived_ids(tmp_path)
    for rid in done:
        [video] = (tmp_path / "nas").rglob(f"{rid}/video-*")
        assert video.read_bytes() == sim.file_bytes(rid)
    # Each webhook made the worker fetch its recording from the API: GET one, never a listing.
    api_paths = [r.path for r in sim.requests if r.kind == "api"]
    assert not any(path.endswith("/recordings") for path in api_paths)
    assert verify_chain(tmp_path / "audit.jsonl").ok


def test_serve_holds_the_sqlite_ledger_and_stops_gracefully_on_sigterm(sim, tmp_path):
    """`rtk-archive serve` as a process: while it runs, a nightly `run` on the same SQLite ledger
    exits 3 (serve holds the run lock); a webhook delivered to it is archived; on SIGTERM it
    stops accepting, finishes, and exits 0."""
    rec = sim.add_recording(status="UPLOADED")
    config = tmp_path / "config.toml"
    raw = serve_config(tmp_path, sim, port=0, workers=1)
    port = _free_port()
    raw["serve"]["port"] = port
    config.write_text(to_toml(raw))
    process = subprocess.Popen(cli_command("serve", "--config", str(config)), env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), timeout=60, what="serve answering /readyz")
        nightly = run_cli("run", "--config", str(config))
        assert nightly.returncode == 3, nightly.stderr
        webhooks = WebhookSender(sim, url + PATH)
        assert webhooks.deliver(webhooks.recording_event(rec["id"])).statuses == [202]
        wait_for(lambda: rec["id"] in archived_ids(tmp_path), timeout=90, what="the announced recording archived")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"listening on http://127.0.0.1:{port}/webhooks/realtimekit with 1 worker(s)" in err
    assert "SIGTERM received" in err


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_simulate_command_delivers_webhooks_that_serve_archives(tmp_path):
    """`rtk-archive simulate --webhook-url URL --new-every 1s` as a process: the recordings it
    makes appear are announced with signed webhooks (the key from its well-known URL) to a
    running `serve`, which archives them."""
    serve_port = _free_port()
    simulate = subprocess.Popen(
        cli_command("simulate", "--port", "0", "--recordings", "0", "--min-size", "10000", "--max-size", "50000",
                    "--new-every", "1s", "--webhook-url", f"http://127.0.0.1:{serve_port}{PATH}"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        block = "".join(until_webhook_block(simulate.stdout))
        printed = tomllib.loads(block)
        raw = {"source": {**printed["source"], "max_retry_seconds": 30}, "webhook": printed["webhook"],
               "ledger": {"path": str(tmp_path / "ledger.db")}, "audit": {"path": str(tmp_path / "audit.jsonl")},
               "archive": {"spool_dir": str(tmp_path / "spool")}, "serve": {"reconcile_every": "0"},
               "targets": [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")}]}
        config = parse_config(raw, environ={})
        services = []
        thread = threading.Thread(target=run_service, kwargs=dict(
            config=config, workers=1, host="127.0.0.1", port=serve_port, on_ready=services.append), daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(done_ids(tmp_path)) >= 2, timeout=120, what="two announced recordings archived")
        finally:
            wait_for(lambda: services, timeout=30, what="serve started")
            services[0].stop()
            thread.join(timeout=60)
    finally:
        simulate.send_signal(signal.SIGTERM)
        simulate.communicate(timeout=60)
    assert simulate.returncode == 0
    assert len(done_ids(tmp_path)) >= 2 and done_ids(tmp_path) <= archived_ids(tmp_path)


def until_webhook_block(stream):
    """The [source] and [webhook] blocks `simulate` prints first."""
    for line in stream:
        yield line
        if line.startswith("public_key_url"):
            return


def test_demo_serve_shows_the_whole_loop(tmp_path):
    """`rtk-archive demo --serve` runs the simulator, serve and a local folder: the announced new
    recordings are archived by webhook, and it says so; exit 0."""
    result = run_cli("demo", "--serve", "--new", "2", "--recordings", "2", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("webhook answered 202, archived") == 2


def test_a_recording_no_webhook_announced_is_archived_by_the_reconcile(sim, tmp_path):
    """A recording that appears with no webhook (a lost delivery) is archived by the periodic
    reconcile listing; the start-up reconcile archives what was there before."""
    before = sim.add_recording(status="UPLOADED")
    with running_service(tmp_path, sim, workers=1, reconcile_every="1s"):
        wait_for(lambda: before["id"] in archived_ids(tmp_path), timeout=90, what="the start-up reconcile")
        later = sim.add_recording(status="UPLOADED")
        wait_for(lambda: later["id"] in archived_ids(tmp_path), timeout=90, what="a later reconcile")
    assert hints(tmp_path / "ledger.db") == []


def test_a_webhook_ahead_of_the_api_is_tried_again_and_one_the_api_does_not_know_is_given_up(sim, tmp_path):
    """The API is the source of truth: a recording announced UPLOADED while the API still says
    UPLOADING stays pending (with the reason) and is archived once the API says UPLOADED; one the
    API does not know (404) is given up at once, with the reason, archiving nothing."""
    rec = sim.add_recording(status="UPLOADED")
    with sim.lock:
        sim.recs[rec["id"]].raw["status"] = "UPLOADING"
    with running_service(tmp_path, sim, workers=1, hint_retry="0.3s", hint_attempts=3) as service:
        webhooks = WebhookSender(sim, service.url + PATH)
        event = webhooks.recording_event(rec["id"])
        event["recording"]["status"] = "UPLOADED"
        ghost = {**event, "recording": {**event["recording"], "id": "no-such-recording"}}
        assert webhooks.deliver(event).statuses == [202] and webhooks.deliver(ghost).statuses == [202]
        pending = wait_for(lambda: [r for r in hints(tmp_path / "ledger.db")
                                    if r["subject_id"] == rec["id"] and r["attempts"] >= 1], timeout=60,
                           what="a first attempt")
        assert pending[0]["state"] == "pending" and "UPLOADING" in pending[0]["last_error"]
        with sim.lock:
            sim.recs[rec["id"]].raw["status"] = "UPLOADED"
        wait_for(lambda: rec["id"] in archived_ids(tmp_path), timeout=90, what="the recording archived")
        wait_for(lambda: {r["subject_id"]: r["state"] for r in hints(tmp_path / "ledger.db")}
                 == {rec["id"]: "done", "no-such-recording": "failed"}, timeout=60, what="both hints settled")
    ghost_row = [r for r in hints(tmp_path / "ledger.db") if r["subject_id"] == "no-such-recording"][0]
    assert "does not know" in ghost_row["last_error"]
    assert archived_ids(tmp_path) == {rec["id"]}


def test_a_busy_port_a_held_ledger_and_a_bad_serve_setting_are_one_line_each(sim, tmp_path):
    """serve refuses clearly, with the documented exit codes: a port another process listens on
    (2), a ledger another serve holds (3), an unreadable [serve] setting naming the key (2)."""
    import socket

    raw = serve_config(tmp_path, sim, workers=0)
    config = tmp_path / "config.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        raw["serve"]["port"] = taken.getsockname()[1]
        config.write_text(to_toml(raw))
        busy = run_cli("serve", "--config", str(config))
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1
    with running_service(tmp_path, sim):
        raw["serve"]["port"] = 0
        config.write_text(to_toml(raw))
        second = run_cli("serve", "--config", str(config))
    assert second.returncode == 3 and "another rtk-archive run" in second.stderr
    raw["serve"]["reconcile_every"] = "often"
    config.write_text(to_toml(raw))
    bad = run_cli("serve", "--config", str(config))
    assert bad.returncode == 2 and "serve.reconcile_every" in bad.stderr and "Traceback" not in bad.stderr
