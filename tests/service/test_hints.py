"""The ledger's hints (work announced by webhooks), as the Ledger protocol defines them: written
for SQLite here; a PostgreSQL ledger must pass the same tests (the `ledger` fixture is the seam)."""

from __future__ import annotations

import pytest

from pipeline.ledger import open_ledger


@pytest.fixture
def ledger(tmp_path):
    opened = open_ledger(tmp_path / "ledger.db", command="test")
    try:
        yield opened
    finally:
        opened.close()


T0, T1, T2 = "2026-11-30T10:00:00.000Z", "2026-11-30T10:05:00.000Z", "2026-11-30T10:10:00.000Z"


def test_a_hint_is_new_once_per_subject_status_and_kind(ledger):
    """record_hint is True the first time only: the same recording and status under another
    delivery id is not new; another status or kind of the same recording is."""
    assert ledger.record_hint("r1", "UPLOADED", "recording", received_at=T0, delivery_id="d1") is True
    assert ledger.record_hint("r1", "UPLOADED", "recording", received_at=T1, delivery_id="d2") is False
    assert ledger.record_hint("r1", "ERRORED", "recording", received_at=T1, delivery_id="d3") is True
    assert ledger.record_hint("r1", "UPLOADED", "transcript", received_at=T1, delivery_id="d4") is True
    [first] = [h for h in ledger.pending_hints(10, now=T2) if (h.status, h.kind) == ("UPLOADED", "recording")]
    assert (first.delivery_id, first.received_at, first.attempts, first.state) == ("d1", T0, 0, "pending")


def test_pending_hints_are_the_due_ones_oldest_first_up_to_the_limit(ledger):
    """pending_hints gives pending hints due by `now`, the longest waiting first, at most `limit`;
    one put back with a later retry_at is not due before then; done and failed ones never are."""
    for rid, at in (("b", T1), ("a", T0), ("c", T2)):
        ledger.record_hint(rid, "UPLOADED", "recording", received_at=at, delivery_id=None)
    assert [h.subject_id for h in ledger.pending_hints(10, now=T2)] == ["a", "b", "c"]
    assert [h.subject_id for h in ledger.pending_hints(2, now=T2)] == ["a", "b"]
    assert [h.subject_id for h in ledger.pending_hints(10, now=T1)] == ["a", "b"]
    ledger.finish_hint("a", "UPLOADED", "recording", state="pending", error="not UPLOADED yet", retry_at=T2)
    ledger.finish_hint("b", "UPLOADED", "recording", state="done")
    ledger.finish_hint("c", "UPLOADED", "recording", state="failed", error="unknown recording")
    assert ledger.pending_hints(10, now=T1) == []
    [again] = ledger.pending_hints(10, now=T2)
    assert (again.subject_id, again.attempts, again.last_error) == ("a", 1, "not UPLOADED yet")


def test_a_ledger_from_before_serve_reads_as_without_hints_and_gets_them_when_it_records(tmp_path):
    """A ledger written by a version without hints: read-only, it has none (and is not changed);
    opened to record, the table is added and takes hints."""
    import sqlite3

    path = tmp_path / "old.db"
    open_ledger(path, command="test").close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE hints")
    reading = open_ledger(path)
    try:
        assert reading.pending_hints(5, now=T2) == []
    finally:
        reading.close()
    recording = open_ledger(path, command="test")
    try:
        assert recording.record_hint("r", "UPLOADED", "recording", received_at=T0, delivery_id=None)
    finally:
        recording.close()
