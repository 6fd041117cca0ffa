"""The webhook endpoint of `rtk-archive serve`, over real HTTP: a real uvicorn server, the real
SQLite ledger, deliveries signed by the simulator's own RSA key and retried as RealtimeKit does."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from pipeline.simulator.webhooks import WebhookKeys, WebhookSender
from tests.mounts import fill, needs_root, tmpfs
from tests.service.helpers import hints, metric, running_service, wait_for

PATH = "/webhooks/realtimekit"


def sender(sim, service, **kwargs) -> WebhookSender:
    return WebhookSender(sim, service.url + PATH, first_retry=0.2, **kwargs)


def test_an_uploaded_recording_is_recorded_as_pending_work_then_answered_2xx(sim, tmp_path):
    """A valid, signed recording.statusUpdate UPLOADED (fileSize a string) is answered 2xx and
    is then, already, a pending hint in the ledger, with the delivery's rtk-uuid."""
    rec = sim.add_recording(status="UPLOADED")
    with running_service(tmp_path, sim) as service:
        webhooks = sender(sim, service)
        event = webhooks.recording_event(rec["id"])
        assert isinstance(event["recording"]["fileSize"], str)
        delivery = webhooks.deliver(event)
        assert delivery.statuses == [202]
        rows = hints(tmp_path / "ledger.db")
        assert [(r["subject_id"], r["status"], r["kind"], r["state"], r["delivery_id"]) for r in rows] == \
            [(rec["id"], "UPLOADED", "recording", "pending", delivery.uuid)]
        assert metric(service, "accepted") == 1


@pytest.mark.parametrize("case", ["missing header", "bad signature", "not base64", "tampered body"])
def test_an_unsigned_or_forged_delivery_is_refused_401_and_records_nothing(sim, tmp_path, case, caplog):
    """A missing signature, one by another key, one that is not base64, and a body changed after
    signing are all answered 401 (not retried by RealtimeKit), recorded nowhere, and logged
    without the body."""
    rec = sim.add_recording(status="UPLOADED")
    with running_service(tmp_path, sim) as service:
        webhooks = sender(sim, service)
        body = json.dumps(webhooks.recording_event(rec["id"])).encode()
        headers = {"content-type": "application/json", "rtk-uuid": "u-1"}
        if case == "bad signature":
            headers["rtk-signature"] = WebhookKeys().sign(body)
        elif case == "not base64":
            headers["rtk-signature"] = "%%%not base64%%%"
        elif case == "tampered body":
            headers["rtk-signature"] = webhooks.keys.sign(body)
            body = body.replace(rec["id"].encode(), b"0" * len(rec["id"]))
        with caplog.at_level("WARNING", logger="rtk_archive.serve"):
            answer = httpx.post(service.url + PATH, content=body, headers=headers)
        assert answer.status_code == 401
        assert hints(tmp_path / "ledger.db") == []
        assert metric(service, "unauthorized") == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in logged and "downloadUrl" not in logged and "/files/" not in logged


def test_a_replayed_delivery_and_the_same_event_with_a_new_uuid_are_recorded_once(sim, tmp_path):
    """Duplicates are found on recording id + status, not only on rtk-uuid: the same delivery
    again and the same event under a new rtk-uuid are both answered 2xx, and the ledger holds
    one hint (with the first delivery's uuid)."""
    rec = sim.add_recording(status="UPLOADED")
    with running_service(tmp_path, sim) as service:
        webhooks = sender(sim, service)
        event = webhooks.recording_event(rec["id"])
        first = webhooks.deliver(event, delivery_id="delivery-1")
        replay = webhooks.deliver(event, delivery_id="delivery-1")
        new_uuid = webhooks.deliver(event, delivery_id="delivery-2")
        assert (first.statuses, replay.statuses, new_uuid.statuses) == ([202], [200], [200])
        rows = hints(tmp_path / "ledger.db")
        assert [(r["subject_id"], r["delivery_id"]) for r in rows] == [(rec["id"], "delivery-1")]
        assert metric(service, "duplicate") == 2


def test_events_that_announce_nothing_to_archive_are_answered_2xx_and_ignored(sim, tmp_path):
    """Valid events other than an UPLOADED recording (a recording still RECORDING or ERRORED,
    meeting events, an event this version does not know) are answered 200, so RealtimeKit does
    not retry them, and record no work; a signed body that is not an event is a 400."""
    rec = sim.add_recording(status="RECORDING")
    with running_service(tmp_path, sim) as service:
        webhooks = sender(sim, service)
        recording = webhooks.recording_event(rec["id"])
        errored = {**recording, "recording": {**recording["recording"], "status": "ERRORED"}}
        others = [recording, errored, {"event": "meeting.started", "meeting": {"id": "m"}},
                  {"event": "meeting.participantJoined"}, {"event": "something.new", "x": 1}]
        assert [webhooks.deliver(event).statuses for event in others] == [[200]] * len(others)
        assert webhooks.deliver(b"[1, 2]").statuses == [400]
        assert webhooks.deliver({"event": "recording.statusUpdate", "recording": {"status": "UPLOADED"}}).statuses \
            == [400]
        assert hints(tmp_path / "ledger.db") == []
        assert metric(service, "ignored") == len(others)


def test_a_rotated_key_is_fetched_again_when_a_signature_fails_once(sim, tmp_path):
    """The service caches the key from the well-known URL; after the simulator rotates its key,
    the next delivery fails with the cached key, the key is fetched again once, and the delivery
    is accepted. A forged signature still fails after the refresh."""
    first, second = sim.add_recording(status="UPLOADED"), sim.add_recording(status="UPLOADED")
    with running_service(tmp_path, sim) as service:
        webhooks = sender(sim, service)
        assert webhooks.deliver(webhooks.recording_event(first["id"])).statuses == [202]
        key_fetches = lambda: sum(1 for r in sim.requests if r.kind == "key")  # noqa: E731
        assert key_fetches() == 1
        assert webhooks.deliver(webhooks.recording_event(first["id"])).statuses == [200]  # cached: no fetch
        assert key_fetches() == 1
        webhooks.keys.rotate()
        assert webhooks.deliver(webhooks.recording_event(second["id"])).statuses == [202]
        assert key_fetches() == 2
        forged = webhooks.deliver(webhooks.recording_event(second["id"]), signature=WebhookKeys().sign(b"x"))
        assert forged.statuses == [401]
        assert {r["subject_id"] for r in hints(tmp_path / "ledger.db")} == {first["id"], second["id"]}


def test_an_oversized_body_is_refused_413(sim, tmp_path):
    """A body over [serve] max_body_bytes is refused before it is read whole or checked."""
    with running_service(tmp_path, sim, max_body_bytes=2048) as service:
        answer = httpx.post(service.url + PATH, content=b"{" + b" " * 4096 + b"}",
                            headers={"rtk-signature": "AAAA"})
        assert answer.status_code == 413
        assert metric(service, "too_large") == 1


def test_health_readiness_and_metrics(sim, tmp_path):
    """/healthz answers while the process lives; /readyz says the ledger is reachable and whether
    a worker runs; /metrics has every webhook outcome and the archive's own metrics (the same
    registry as the textfile) and reveals no ledger content (no recording id)."""
    with running_service(tmp_path, sim, workers=1) as service:
        assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(service.url + "/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "ledger": "ok", "worker": "running"}
        text = httpx.get(service.url + "/metrics").text
        assert 'rtk_archive_webhooks_total{outcome="unavailable"} 0.0' in text
        assert "rtk_archive_serve_worker_alive 1.0" in text
        assert "rtk_archive_recordings_at_risk" in text and "rtk_archive_last_run_exit_code" in text
        assert not any(rec["id"] in text for rec in sim.recordings)
        assert httpx.get(service.url + "/webhooks/realtimekit").status_code == 405


@needs_root
def test_a_full_ledger_disk_answers_503_and_the_retry_succeeds(sim, tmp_path):
    """The ledger's file system is full (a small tmpfs, filled): the delivery is answered 503,
    so RealtimeKit retries it, and nothing is acknowledged that is not recorded; once space is
    free again, the sender's retry of the same delivery is accepted and recorded."""
    rec = sim.add_recording(status="UPLOADED")
    with tmpfs(tmp_path / "ledgerfs", size="4m") as folder, \
            running_service(tmp_path, sim, ledger=folder / "ledger.db") as service:
        webhooks = sender(sim, service, attempts=30)
        filler = fill(folder)
        result = []
        thread = threading.Thread(target=lambda: result.append(webhooks.deliver(webhooks.recording_event(rec["id"]))))
        thread.start()
        wait_for(lambda: metric(service, "unavailable") >= 1, what="a 503 while the disk is full")
        assert httpx.get(service.url + "/readyz").status_code == 200  # reading still works
        filler.unlink()
        thread.join(timeout=120)
        delivery = result[0]
        assert delivery.statuses[0] == 503 and delivery.statuses[-1] == 202, delivery.statuses
        assert [r["subject_id"] for r in hints(folder / "ledger.db")] == [rec["id"]]


def test_a_body_that_does_not_arrive_in_time_is_answered_408(sim, tmp_path):
    """A client that announces a body and sends only part of it (slowloris) is answered 408 after
    [serve] request_timeout, instead of holding the request open; nothing is recorded."""
    import socket

    with running_service(tmp_path, sim, request_timeout="1s") as service:
        with socket.create_connection(("127.0.0.1", service.port), timeout=60) as conn:
            conn.sendall(b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                         b"rtk-signature: AAAA\r\n\r\n{\"event\"")
            answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert metric(service, "timeout") == 1
        assert hints(tmp_path / "ledger.db") == []
