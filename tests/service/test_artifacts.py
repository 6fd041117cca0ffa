"""Meeting artifacts announced only by webhook (`meeting.transcript`, `meeting.summary`,
`meeting.chatSynced`): `serve` keeps their presigned URL in the spool (never in the ledger),
records each as a unit `<sessionId>.<kind>` and a hint before answering, and its worker archives
them through the archive engine: verified at the target, their own manifest, the audit trail.
Real HTTP throughout: the simulator signs and delivers the webhooks and serves the files behind
URLs that really expire."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from pathlib import Path

import pytest

from pipeline.audit import verify_chain
from pipeline.config import parse_config
from pipeline.session import verify_archive
from pipeline.simulator.artifacts import ARTIFACTS, artifact_events, artifacts, iso_ts
from pipeline.simulator.webhooks import WebhookSender
from tests.helpers import ledger_rows, run_cli, to_toml
from tests.service.helpers import hints, running_service, serve_config, wait_for

PATH = "/webhooks/realtimekit"
URL_FIELDS = {event: url_field for event, url_field, _, _ in ARTIFACTS.values()}


def events_of(sim) -> tuple[dict, dict[str, dict]]:
    """A finished recording and its session's three artifact events, by kind."""
    rec = sim.add_recording(status="UPLOADED")
    by_event = {body["event"]: body for body in artifact_events(sim, rec)}
    return rec, {kind: by_event[event] for kind, (event, *_rest) in ARTIFACTS.items()}


def settled(tmp_path: Path) -> dict[str, str]:
    return {h["subject_id"]: h["state"] for h in hints(tmp_path / "ledger.db") if h["state"] != "pending"}


def audit_lines(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def deliver_all(service, sim, bodies, *, attempts: int = 8) -> list:
    sender = WebhookSender(sim, service.url + PATH, attempts=attempts)
    try:
        return [sender.deliver(body) for body in bodies]
    finally:
        sender.stop()


def test_transcript_summary_and_chat_are_archived_verified_with_manifest_and_audit(sim, tmp_path, caplog):
    """Each artifact webhook is answered 202 and becomes a unit `<sessionId>.<kind>` archived at
    the local target, dated beside the session's recording: the bytes the URL serves, a manifest
    that lists the file with its SHA-256, the audit trail (downloaded, verified, manifest_stored)
    and a verifying chain; its URL file is removed; no presigned URL (nor its signature) is in
    the SQLite ledger's bytes, the audit log or any line the tool logged."""
    caplog.set_level(logging.DEBUG)
    rec, bodies = events_of(sim)
    session = rec["session_id"]
    with running_service(tmp_path, sim, workers=1) as service:
        deliveries = deliver_all(service, sim, bodies.values())
        assert [d.statuses for d in deliveries] == [[202]] * 3
        wait_for(lambda: len(settled(tmp_path)) == 3, timeout=90, what="three artifacts settled")
    assert settled(tmp_path) == {f"{session}.{kind}": "done" for kind in bodies}
    ledger = tmp_path / "ledger.db"
    units = {r["id"]: r for r in ledger_rows(ledger, "SELECT * FROM recordings WHERE id LIKE ?", (f"{session}.%",))}
    assert {uid: r["state"] for uid, r in units.items()} == {f"{session}.{k}": "archived" for k in bodies}
    trail = audit_lines(tmp_path)
    for kind, body in bodies.items():
        uid = f"{session}.{kind}"
        unit = units[uid]
        assert (unit["session_id"], unit["meeting_id"]) == (session, rec["meeting"]["id"])
        assert unit["deadline"] == body[URL_FIELDS[body["event"]].replace("Url", "UrlExpiry")]
        [copy] = ledger_rows(ledger, "SELECT * FROM copies WHERE recording_id=? AND kind=?", (uid, kind))
        stored = tmp_path / "nas" / copy["key"]
        expected = artifacts(sim).body(session, kind)
        assert copy["state"] == "archived" and stored.read_bytes() == expected
        assert copy["key"].startswith(rec["invoked_time"][:10].replace("-", "/") + "/")  # the session's date
        [manifest_copy] = ledger_rows(ledger, "SELECT * FROM copies WHERE recording_id=? AND kind='manifest'",
                                      (uid,))
        manifest = json.loads((tmp_path / "nas" / manifest_copy["key"]).read_text())
        [entry] = manifest["files"]
        assert (entry["kind"], entry["sha256"]) == (kind, hashlib.sha256(expected).hexdigest())
        assert manifest["recording"]["session_id"] == session
        done = {e["action"] for e in trail if e.get("recording_id") == uid}
        assert {"downloaded", "verified", "manifest_stored"} <= done
    assert not list((tmp_path / "spool" / "hints").glob("*.url"))
    assert verify_chain(tmp_path / "audit.jsonl").ok
    raw = ledger.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db-*"))
    # The tool's own log lines (the CLI keeps third-party loggers such as httpx at WARNING; the
    # simulator is the other side of the wire and logs its own requests).
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if r.name.startswith("rtk_archive") and not r.name.startswith("rtk_archive.simulator"))
    assert "archived recording" in logged  # the tool's lines were captured
    for body in bodies.values():
        url = body[URL_FIELDS[body["event"]]]
        signature = url.split("X-Signature=")[1]
        assert url.encode() not in raw and signature.encode() not in raw
        assert signature not in logged and signature not in (tmp_path / "audit.jsonl").read_text()


def test_the_url_is_kept_owner_only_in_the_spool_and_the_unit_recorded_before_the_answer(sim, tmp_path):
    """With no worker, an accepted transcript webhook leaves, by the time it is answered, its
    URL in `<spool>/hints/<sessionId>.transcript.url` (mode 0600 in owner-only folders, the URL
    exactly), a pending hint of kind `transcript`, and the unit pending in the ledger with the
    URL's expiry as its deadline; a body without a URL is refused with 400. A `run` in between leaves the kept URL
    in place, and the next `serve` with a worker archives the transcript from it."""
    rec, bodies = events_of(sim)
    body = bodies["transcript"]
    with running_service(tmp_path, sim, workers=0) as service:
        [delivery] = deliver_all(service, sim, [body])
        assert delivery.statuses == [202]
        kept = tmp_path / "spool" / "hints" / f"{rec['session_id']}.transcript.url"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert {stat.S_IMODE(p.stat().st_mode) for p in (kept.parent, kept.parent.parent)} == {0o700}
        assert kept.read_text().strip() == body["transcriptDownloadUrl"]
        [hint] = hints(tmp_path / "ledger.db")
        assert (hint["subject_id"], hint["kind"], hint["state"]) == (f"{rec['session_id']}.transcript",
                                                                     "transcript", "pending")
        [unit] = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM recordings")
        assert (unit["state"], unit["deadline"]) == ("pending", body["transcriptDownloadUrlExpiry"])
        [refused] = deliver_all(service, sim, [{**body, "transcriptDownloadUrl": None}])
        assert refused.statuses == [400]
    # A nightly run on the same ledger and spool (serve stopped) clears the spool of its own
    # files, never the kept URLs; a later serve with a worker archives the transcript from it.
    config = tmp_path / "config.toml"
    config.write_text(to_toml(serve_config(tmp_path, sim)))
    nightly = run_cli("run", "--config", str(config))
    assert nightly.returncode == 0, nightly.stderr
    assert kept.read_text().strip() == body["transcriptDownloadUrl"]
    with running_service(tmp_path, sim, workers=1):
        wait_for(lambda: settled(tmp_path), timeout=90, what="the transcript settled")
    assert settled(tmp_path) == {f"{rec['session_id']}.transcript": "done"} and not kept.exists()


def test_an_artifact_whose_url_expired_is_lost_with_the_reason(sim, tmp_path):
    """A summary announced with a URL that already expired cannot be fetched (no API gives
    another): the unit and its file are recorded lost with a reason naming the expiry, its
    hint settles, its URL file is removed, and nothing is at the target."""
    rec, bodies = events_of(sim)
    session = rec["session_id"]
    url, expires = artifacts(sim).sign(session, "summary", lifetime=-60)
    body = {**bodies["summary"], "summaryDownloadUrl": url, "summaryDownloadUrlExpiry": iso_ts(expires)}
    with running_service(tmp_path, sim, workers=1) as service:
        assert deliver_all(service, sim, [body])[0].statuses == [202]
        wait_for(lambda: settled(tmp_path), timeout=90, what="the summary settled")
    uid = f"{session}.summary"
    [unit] = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM recordings WHERE id=?", (uid,))
    [file] = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM files WHERE recording_id=?", (uid,))
    assert unit["state"] == "lost" and file["state"] == "lost"
    assert "expired" in file["last_error"] and "cannot be obtained" in file["last_error"]
    assert not list((tmp_path / "spool" / "hints").glob("*.url"))
    assert not list((tmp_path / "nas").rglob("*summary*")) if (tmp_path / "nas").exists() else True
    assert any(e["action"] == "lost" and e.get("recording_id") == uid for e in audit_lines(tmp_path))


def test_a_redelivered_artifact_event_is_archived_once(sim, tmp_path):
    """The same chat export delivered again (a new rtk-uuid, before and after it was archived)
    is answered 200 as a duplicate: one hint, one copy, and the simulator served its file once."""
    rec, bodies = events_of(sim)
    body = bodies["chat"]
    uid = f"{rec['session_id']}.chat"
    with running_service(tmp_path, sim, workers=1) as service:
        first, again = deliver_all(service, sim, [body, body])
        assert (first.statuses, again.statuses) == ([202], [200])
        wait_for(lambda: settled(tmp_path), timeout=90, what="the chat settled")
        [late] = deliver_all(service, sim, [body])
        assert late.statuses == [200]
    assert [h["subject_id"] for h in hints(tmp_path / "ledger.db")] == [uid]
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies WHERE recording_id=? AND kind='chat'", (uid,))
    assert [c["state"] for c in copies] == ["archived"]
    fetched = [r for r in sim.requests if r.kind == "artifact" and "/chat" in r.path and r.method == "GET"]
    assert len(fetched) == 1
    assert not list((tmp_path / "spool" / "hints").glob("*.url"))


def test_verify_finds_an_altered_artifact_copy(sim, tmp_path):
    """After a transcript is archived, changing its copy at the target is reported by `verify`
    as a mismatch of that unit's transcript (the same check as for any recording's file)."""
    rec, bodies = events_of(sim)
    uid = f"{rec['session_id']}.transcript"
    with running_service(tmp_path, sim, workers=1) as service:
        assert deliver_all(service, sim, [bodies["transcript"]])[0].statuses == [202]
        wait_for(lambda: settled(tmp_path), timeout=90, what="the transcript settled")
    [copy] = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies WHERE recording_id=? AND kind='transcript'",
                         (uid,))
    stored = tmp_path / "nas" / copy["key"]
    config = parse_config(serve_config(tmp_path, sim), environ={})
    assert verify_archive(config, target=None, since=None, until=None, deep=True).problems == []
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes() + b"forged line\n")
    outcome = verify_archive(config, target=None, since=None, until=None, deep=True)
    assert [(p["recording_id"], p["kind"], p["state"]) for p in outcome.problems] == [(uid, "transcript", "mismatch")]


@pytest.mark.parametrize("kind", ["transcript", "summary", "chat"])
def test_each_artifact_event_shape_is_read(sim, kind):
    """The receiver reads each documented shape (transcript and summary under `meeting`, chat
    flat) into the unit id, meeting, URL and expiry the webhook gives."""
    from pipeline.service.artifacts import read_announcement

    rec, bodies = events_of(sim)
    body = bodies[kind]
    announced = read_announcement(body["event"], json.dumps(body).encode())
    url_field = URL_FIELDS[body["event"]]
    assert announced.unit_id == f"{rec['session_id']}.{kind}"
    assert announced.meeting_id == rec["meeting"]["id"] and announced.url == body[url_field]
    assert announced.expiry is not None and url_field not in repr(announced) and "X-Signature" not in repr(announced)


def test_an_artifact_the_spool_cannot_keep_is_answered_503_and_taken_when_delivered_again(sim, tmp_path):
    """When its URL cannot be written durably (a file stands where `<spool>/hints` must be), the
    webhook is answered 503 and nothing is recorded, so RealtimeKit delivers it again; once the
    spool is usable the same event is accepted (202) and its hint recorded."""
    rec, bodies = events_of(sim)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "hints").write_text("in the way\n")
    with running_service(tmp_path, sim, workers=0) as service:
        [refused] = deliver_all(service, sim, [bodies["chat"]], attempts=1)  # its retry comes below
        assert refused.statuses == [503]
        assert hints(tmp_path / "ledger.db") == []
        (tmp_path / "spool" / "hints").unlink()
        [again] = deliver_all(service, sim, [bodies["chat"]])
        assert again.statuses == [202]
    assert [h["subject_id"] for h in hints(tmp_path / "ledger.db")] == [f"{rec['session_id']}.chat"]


def test_hint_files_of_unsafe_session_ids_stay_in_the_folder_and_apart(tmp_path):
    """A session id that is not a safe file name (separators, `..`) gets a file inside
    `<spool>/hints` all the same, and two ids that sanitise alike get different files."""
    from pipeline.service.artifacts import HintFiles

    files = HintFiles(tmp_path / "spool")
    one, other = files.path("../a/b.chat"), files.path("../a_b.chat")
    assert one.parent == other.parent == tmp_path / "spool" / "hints" and one != other
    files.keep("../a/b.chat", "https://example.invalid/x?sig=1")
    assert files.read("../a/b.chat") == "https://example.invalid/x?sig=1" and files.read("../a_b.chat") is None
