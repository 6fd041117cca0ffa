"""The simulator's webhooks, as RealtimeKit sends them: its own RSA key (the public half served
at /.well-known/webhooks.json in RealtimeKit's shape), `recording.statusUpdate` deliveries signed
over the raw body (`rtk-signature`, base64 RSA-SHA256, PKCS#1 v1.5) with `rtk-uuid` and
`rtk-webhook-id`, sent as recordings change status (camelCase, `fileSize` a string), then, for a
finished recording, its session's `meeting.transcript`, `meeting.summary` and
`meeting.chatSynced` (pipeline.simulator.artifacts serves their files); retried on 5xx and
network errors only. `new_every` makes a new UPLOADED recording appear that often."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .artifacts import artifact_events, webhook_meeting

log = logging.getLogger("rtk_archive.simulator")

WELL_KNOWN_PATH = "/.well-known/webhooks.json"
ANNOUNCED_STATUSES = ("RECORDING", "UPLOADING", "UPLOADED", "ERRORED")


class WebhookKeys:
    """The simulator's signing key; `rotate()` replaces it (the well-known URL then serves the new one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rotate()

    def rotate(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            self._key = key

    def public_pem(self) -> str:
        with self._lock:
            key = self._key
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, body: bytes) -> str:
        with self._lock:
            key = self._key
        return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()

    def document(self) -> dict[str, Any]:
        """What RealtimeKit's well-known URL answers."""
        return {"success": True, "data": {"publicKey": self.public_pem()}, "message": ""}


def webhook_keys(sim: Any) -> WebhookKeys:
    """The simulator's key pair, made on first use."""
    with sim.lock:
        keys = getattr(sim, "webhook_keys", None)
        if keys is None:
            keys = sim.webhook_keys = WebhookKeys()
        return keys


def status_update(raw: dict[str, Any], urls: dict[str, Any], *, organization_id: str) -> dict[str, Any]:
    """A `recording.statusUpdate` body for a simulator recording (its API dict and signed URLs)."""
    meeting = raw.get("meeting") or {}
    size = raw.get("file_size")
    return {
        "event": "recording.statusUpdate",
        "recording": {
            "id": raw["id"], "recordingId": raw["id"], "status": raw.get("status"),
            "downloadUrl": urls.get("download_url"), "audioDownloadUrl": urls.get("audio_download_url"),
            "downloadUrlExpiry": urls.get("download_url_expiry"),
            "startedTime": raw.get("started_time"), "stoppedTime": raw.get("stopped_time"),
            "fileSize": None if size is None else str(size), "outputFileName": raw.get("output_file_name"),
            "meetingId": meeting.get("id"), "recordingDuration": raw.get("recording_duration"),
            "organizationId": organization_id, "roomUUID": meeting.get("id"),
        },
        "meeting": webhook_meeting(raw, organization_id),
    }


@dataclass
class Delivery:
    event: str
    subject: str | None
    uuid: str
    statuses: list[int | str] = field(default_factory=list)  # per attempt: the HTTP status or the error
    sent_at: float = field(default_factory=time.time)  # the first attempt

    @property
    def delivered(self) -> bool:
        return bool(self.statuses) and isinstance(self.statuses[-1], int) and 200 <= self.statuses[-1] < 300


class WebhookSender:
    """Delivers the simulator's webhooks to `url` from a thread of its own (start/stop), as
    recordings reach a new status; `deliver()` sends one body now (tests use it directly).
    Without a url, only `new_every` acts: recordings appear, announced to no one."""

    def __init__(self, sim: Any, url: str | None, *, new_every: float | None = None, attempts: int = 8,
                 first_retry: float = 0.5, webhook_id: str | None = None, artifacts: bool = True) -> None:
        self.sim = sim
        self.url = url
        self.new_every = new_every
        self.attempts = attempts
        self.first_retry = first_retry
        self.artifacts = artifacts  # also announce each finished recording's transcript, summary, chat
        self.webhook_id = webhook_id or str(uuid.UUID(int=sim.seed))
        self.keys = webhook_keys(sim)
        self.deliveries: list[Delivery] = []
        self._seen = {rid: rec.raw.get("status") for rid, rec in sim.recs.items()}  # announced before we started
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=10.0)

    def start(self) -> WebhookSender:
        if not self.url and not self.new_every:
            return self
        self._thread = threading.Thread(target=self._run, name="rtk-sim-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._client.close()

    def __enter__(self) -> WebhookSender:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what is sent ----------------------------------------------------------------------------

    def recording_event(self, recording_id: str) -> dict[str, Any]:
        with self.sim.lock:
            rec = self.sim.recs[recording_id]
            urls = self.sim.files.urls(rec, self.sim.origin.split("//", 1)[1], False)
            return status_update(rec.raw, urls, organization_id=self.sim.account_id)

    def deliver(self, payload: dict[str, Any] | bytes, *, delivery_id: str | None = None,
                signature: str | None = None) -> Delivery:
        """Send one body, retried like RealtimeKit (5xx and network errors only, with backoff);
        `signature` overrides the real one (to test a receiver)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            data = payload if isinstance(payload, dict) else json.loads(body)
        except ValueError:
            data = {}  # a test's deliberately unreadable body
        data = data if isinstance(data, dict) else {}
        subject = (data.get("recording") or {}).get("id") if isinstance(data, dict) else None
        delivery = Delivery(event=str(data.get("event")), subject=subject, uuid=delivery_id or str(uuid.uuid4()))
        assert self.url, "no webhook URL to deliver to"
        headers = {"content-type": "application/json", "rtk-signature": signature or self.keys.sign(body),
                   "rtk-uuid": delivery.uuid, "rtk-webhook-id": self.webhook_id}
        for attempt in range(self.attempts):
            if attempt:
                if self._stop.wait(min(30.0, self.first_retry * 2 ** (attempt - 1))):
                    break
            try:
                status: int | str = self._client.post(self.url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}: {exc}"
            delivery.statuses.append(status)
            if isinstance(status, int) and status < 500:
                break  # delivered, or refused for good (RealtimeKit does not retry a 4xx)
        self.deliveries.append(delivery)
        log.info("webhook %s %s: %s", delivery.event, subject or "", delivery.statuses)
        return delivery

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        next_new = time.monotonic() + (self.new_every or 0)
        while not self._stop.wait(0.2):
            if self.new_every and time.monotonic() >= next_new:
                next_new = time.monotonic() + self.new_every
                self.sim.add_recording(status="UPLOADED")
            for recording_id in self._changed() if self.url else ():
                event = self.recording_event(recording_id)
                self.deliver(event)
                if self.artifacts and event["recording"]["status"] == "UPLOADED":
                    with self.sim.lock:
                        raw = dict(self.sim.recs[recording_id].raw)
                    for artifact in artifact_events(self.sim, raw):
                        self.deliver(artifact)

    def _changed(self) -> list[str]:
        """Recordings whose status changed to one RealtimeKit announces since the last look."""
        changed = []
        with self.sim.lock:
            for rid, rec in self.sim.recs.items():
                status = rec.raw.get("status")
                if self._seen.get(rid) != status:
                    self._seen[rid] = status
                    if status in ANNOUNCED_STATUSES:
                        changed.append(rid)
        return changed


def interval(text: str) -> float:
    """An argparse type: seconds, optionally with a unit: 2, 2s, 500ms, 1m (0.05 s to 1 day)."""
    import argparse
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 2s, 500ms, 1m)")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
    if not 0.05 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: from 50ms to 1 day")
    return value
