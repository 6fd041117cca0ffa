"""The meeting artifacts RealtimeKit announces only by webhook (no listing API): a session's
transcript, summary and chat export, each behind a presigned URL that really expires, with
bytes computed from the session id (the same on every request)."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from .records import iso
from .transport import Handler

# kind -> (event, URL field, content type, file suffix)
ARTIFACTS: dict[str, tuple[str, str, str, str]] = {
    "transcript": ("meeting.transcript", "transcriptDownloadUrl", "text/csv", "csv"),
    "summary": ("meeting.summary", "summaryDownloadUrl", "text/plain", "txt"),
    "chat": ("meeting.chatSynced", "chatDownloadUrl", "text/csv", "csv"),
}
LIFETIME = 7 * 86400  # as recordings: RealtimeKit keeps them 7 days


class Artifacts:
    """Signs artifact URLs and serves GET /artifacts/{session_id}/{kind}."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self._key = secrets.token_bytes(32)

    def _signature(self, session_id: str, kind: str, expires: int) -> str:
        return hmac.new(self._key, f"{session_id}\n{kind}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, session_id: str, kind: str, lifetime: float = LIFETIME) -> tuple[str, int]:
        expires = math.ceil(self.sim.now_ts() + lifetime)
        url = (f"{self.sim.origin}/artifacts/{quote(session_id, safe='')}/{kind}"
               f"?X-Expires={expires}&X-Signature={self._signature(session_id, kind, expires)}")
        return url, expires

    def body(self, session_id: str, kind: str) -> bytes:
        seed = hashlib.sha256(f"{session_id}/{kind}".encode()).hexdigest()
        if kind == "summary":
            return f"Summary of session {session_id}\nDecisions: {seed[:16]}\n".encode()
        rows = [f"{i},{seed[i:i + 8]},line {i} of the {kind}" for i in range(1 + int(seed[:2], 16) % 40)]
        return ("index,speaker,text\n" + "\n".join(rows) + "\n").encode()

    def serve(self, h: Handler, method: str, path: str, query: dict[str, list[str]]) -> None:
        match = re.fullmatch(r"/artifacts/([^/]+)/(transcript|summary|chat)", path)
        if method not in ("GET", "HEAD") or match is None:
            h.send_xml(404, "NoSuchKey", "Not found", head=method == "HEAD")
            return
        session_id, kind = match.groups()
        expires = (query.get("X-Expires") or [""])[0]
        given = (query.get("X-Signature") or [""])[0]
        if not expires.isdigit() or not hmac.compare_digest(given, self._signature(session_id, kind, int(expires))):
            h.send_xml(403, "SignatureDoesNotMatch", "The request signature does not match", head=method == "HEAD")
        elif int(expires) < self.sim.now_ts():
            h.send_xml(403, "AccessDenied", "Request has expired", head=method == "HEAD")
        else:
            h.send_bytes(200, self.body(session_id, kind), ARTIFACTS[kind][2], head=method == "HEAD")


def artifacts(sim: Any) -> Artifacts:
    """The simulator's artifact server, made on first use."""
    with sim.lock:
        server = getattr(sim, "artifacts", None)
        if server is None:
            server = sim.artifacts = Artifacts(sim)
        return server


def webhook_meeting(raw: dict[str, Any], organization_id: str) -> dict[str, Any]:
    """The `meeting` object of a webhook about a recording (`raw`: its API dict), camelCase."""
    meeting = raw.get("meeting") or {}
    return {"id": meeting.get("id"), "sessionId": raw.get("session_id"), "title": meeting.get("title"),
            "roomName": meeting.get("id"), "status": "INACTIVE", "createdAt": meeting.get("created_at"),
            "startedAt": raw.get("started_time"), "endedAt": raw.get("stopped_time"),
            "organizedBy": {"id": organization_id, "name": "rtk-sim"}}


def artifact_events(sim: Any, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The meeting.transcript, meeting.summary and meeting.chatSynced bodies for the session of
    a finished recording (`raw`: its API dict), in RealtimeKit's camelCase shapes."""
    meeting = raw.get("meeting") or {}
    session_id = str(raw.get("session_id") or raw["id"])
    announced = {**webhook_meeting(raw, sim.account_id), "sessionId": session_id}
    events = []
    for kind, (event, url_field, _, _) in ARTIFACTS.items():
        url, expires = artifacts(sim).sign(session_id, kind)
        expiry_field = url_field.replace("Url", "UrlExpiry")
        if kind == "chat":  # chatSynced is flat, not under `meeting`
            body = {"event": event, "sessionId": session_id, "meetingId": meeting.get("id"),
                    "title": meeting.get("title"), url_field: url, expiry_field: iso_ts(expires),
                    "createdAt": meeting.get("created_at"), "startedAt": raw.get("started_time"),
                    "endedAt": raw.get("stopped_time"), "organizedBy": announced["organizedBy"]}
        else:
            body = {"event": event, "meeting": announced, url_field: url, expiry_field: iso_ts(expires)}
        events.append(body)
    return events


def iso_ts(seconds: int) -> str | None:
    return iso(datetime.fromtimestamp(seconds, tz=timezone.utc))
