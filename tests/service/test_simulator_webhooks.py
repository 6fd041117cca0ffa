"""The simulator's side of webhooks: its key at the well-known URL in RealtimeKit's shape, the
signature over the raw body, the camelCase payloads, the artifact files behind expiring URLs,
and RealtimeKit's retry rule (5xx and network errors only)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from pipeline.service.webhooks import load_public_key, parse_event, verify_signature
from pipeline.simulator.artifacts import artifact_events
from pipeline.simulator.webhooks import WELL_KNOWN_PATH, WebhookSender


class _Recorder(BaseHTTPRequestHandler):
    """A receiver that answers the statuses a test lines up, and keeps what it received."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _receiver(answers):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received, server.answers = [], list(answers)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def test_deliveries_are_signed_over_the_raw_body_with_the_key_at_the_well_known_url(sim):
    """The key document has RealtimeKit's shape; each delivery's rtk-signature verifies against
    it over the exact bytes sent; the payload is camelCase with fileSize a string; 5xx answers
    are retried with the same rtk-uuid, a 4xx is not."""
    rec = sim.add_recording(status="UPLOADED")
    document = httpx.get(sim.origin + WELL_KNOWN_PATH).json()
    assert document["success"] is True and document["message"] == ""
    key = load_public_key(document["data"]["publicKey"])
    server = _receiver([503, 502, 200, 400])
    try:
        webhooks = WebhookSender(sim, f"http://127.0.0.1:{server.server_address[1]}/hook", first_retry=0.05)
        assert webhooks.deliver(webhooks.recording_event(rec["id"])).statuses == [503, 502, 200]
        assert webhooks.deliver({"event": "meeting.started"}).statuses == [400]
    finally:
        server.shutdown()
        server.server_close()
    headers, body = server.received[0]
    assert verify_signature(key, body, base64.b64decode(headers["rtk-signature"]))
    assert {h["rtk-uuid"] for h, _ in server.received[:3]} == {headers["rtk-uuid"]}
    assert headers["rtk-webhook-id"]
    payload = json.loads(body)
    assert payload["recording"]["fileSize"] == str(rec["file_size"])
    assert payload["recording"]["downloadUrl"].startswith(sim.origin + "/files/")
    assert parse_event(body).recording.file_size == rec["file_size"]


def test_artifact_events_point_at_files_that_really_expire(sim):
    """meeting.transcript, meeting.summary and meeting.chatSynced carry presigned URLs the
    simulator serves (the same bytes each time); a changed signature or an expired URL is 403."""
    rec = sim.add_recording(status="UPLOADED")
    events = {e["event"]: e for e in artifact_events(sim, rec)}
    assert set(events) == {"meeting.transcript", "meeting.summary", "meeting.chatSynced"}
    urls = [events["meeting.transcript"]["transcriptDownloadUrl"], events["meeting.summary"]["summaryDownloadUrl"],
            events["meeting.chatSynced"]["chatDownloadUrl"]]
    assert events["meeting.chatSynced"]["sessionId"] == rec["session_id"]
    for url in urls:
        first, again = httpx.get(url), httpx.get(url)
        assert first.status_code == 200 and first.content and first.content == again.content
        forged = url[:-1] + ("0" if url[-1] != "0" else "1")
        assert httpx.get(forged).status_code == 403
    sim.advance(8 * 86400)
    assert all(httpx.get(url).status_code == 403 for url in urls)
