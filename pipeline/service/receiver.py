"""What a webhook delivery gets, decided without HTTP: 401 for a missing or bad signature
(logged, never the body), 400 for a signed body that cannot be read, 2xx for a valid event
(a `recording.statusUpdate` with status UPLOADED, or a transcript, summary or chat export, is
first recorded in the ledger as work),
503 when the ledger or the public key is unavailable, so RealtimeKit delivers it again."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline import errors
from pipeline.clock import utcnow
from pipeline.ledger import Ledger
from pipeline.service.artifacts import ArtifactInbox
from pipeline.service.metrics import ServiceMetrics
from pipeline.service.webhooks import (ARTIFACT_EVENTS, DELIVERY_HEADER, SIGNATURE_HEADER, BadPayload, KeyUnavailable,
                                       PublicKey, RecordingStatusUpdate, parse_event, signed_by)

log = logging.getLogger("rtk_archive.serve")

RECORDING_KIND = "recording"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


class Receiver:
    def __init__(self, ledger: Ledger, key: PublicKey, metrics: ServiceMetrics, *, on_new_work=lambda: None,
                 artifacts: ArtifactInbox | None = None):
        self.ledger = ledger
        self.artifacts = artifacts  # transcripts, summaries, chats: None answers them 200 and ignores them
        self.key = key
        self.metrics = metrics
        self.on_new_work = on_new_work  # wakes the worker

    def receive(self, headers: Mapping[str, str], body: bytes, client: str) -> Answer:
        delivery = (headers.get(DELIVERY_HEADER) or "")[:80] or None
        where = f"webhook delivery {delivery or '(no rtk-uuid)'} from {client}"
        signature = headers.get(SIGNATURE_HEADER)
        if not signature:
            log.warning("%s: refused: no %s header", where, SIGNATURE_HEADER)
            return self._answer("unauthorized", 401, "missing signature")
        try:
            valid = signed_by(self.key, body, signature)
        except KeyUnavailable as exc:
            log.error("%s: cannot be checked now: %s", where, exc)
            return self._answer("unavailable", 503, "the signing key is unavailable; deliver again later")
        if not valid:
            log.warning("%s: refused: the %s does not match the body (%d bytes)", where, SIGNATURE_HEADER, len(body))
            return self._answer("unauthorized", 401, "bad signature")
        try:
            event = parse_event(body)
        except BadPayload as exc:
            log.warning("%s: refused: %s", where, exc)
            return self._answer("bad_request", 400, str(exc))
        if event.event in ARTIFACT_EVENTS and self.artifacts is not None:
            return self._artifact(event.event, body, where, delivery)
        if event.event in ARTIFACT_EVENTS:
            log.warning("%s: %s: not archived by this version (no API lists transcripts, summaries or chats; "
                        "only this webhook announces them)", where, event.event)
            return self._answer("ignored", 200, "ignored")
        if not isinstance(event, RecordingStatusUpdate) or event.recording.status != "UPLOADED":
            status = event.recording.status if isinstance(event, RecordingStatusUpdate) else None
            log.info("%s: %s%s: nothing to archive", where, event.event, f" {status}" if status else "")
            return self._answer("ignored", 200, "ignored")
        recording = event.recording
        try:
            new = self.ledger.record_hint(recording.id, recording.status, RECORDING_KIND, received_at=utcnow(),
                                          delivery_id=delivery)
        except errors.BookkeepingError as exc:
            log.error("%s: recording %s could not be recorded (answered 503, RealtimeKit retries): %s",
                      where, recording.id, exc)
            return self._answer("unavailable", 503, "the ledger is unavailable; deliver again later")
        if not new:
            log.info("%s: recording %s %s already known: nothing new", where, recording.id, recording.status)
            return self._answer("duplicate", 200, "already recorded")
        log.info("%s: recording %s is UPLOADED: queued for archiving", where, recording.id)
        self.on_new_work()
        return self._answer("accepted", 202, "accepted")

    def _artifact(self, event: str, body: bytes, where: str, delivery: str | None) -> Answer:
        """A transcript, summary or chat export: its URL kept in the spool and its unit and hint
        in the ledger (pipeline.service.artifacts), then answered."""
        try:
            new, announced = self.artifacts.accept(event, body, delivery)
        except BadPayload as exc:
            log.warning("%s: refused: %s", where, exc)
            return self._answer("bad_request", 400, str(exc))
        except errors.BookkeepingError as exc:
            log.error("%s: %s could not be recorded (answered 503, RealtimeKit retries): %s", where, event, exc)
            return self._answer("unavailable", 503, "the ledger is unavailable; deliver again later")
        if not new:
            log.info("%s: %s %s already known: nothing new", where, announced.kind, announced.unit_id)
            return self._answer("duplicate", 200, "already recorded")
        log.info("%s: %s %s: queued for archiving", where, announced.kind, announced.unit_id)
        self.on_new_work()
        return self._answer("accepted", 202, "accepted")

    def _answer(self, outcome: str, status: int, message: str) -> Answer:
        self.metrics.delivery(outcome)
        return Answer(status, {"success": 200 <= status < 300, "outcome": outcome, "message": message})
