"""Durable writes shared between threads (pipeline.group_commit), as the audit log and the
SQLite ledger use them: a claim's audit line is on disk before the ledger row that depends on
it is written (in a real run, for every copy and manifest); ledger rows that only derive from
durable ones do not wait for an fsync of their own, but are covered by the next one; a failed
fsync fails every later wait. Also what keeps a small recording cheap without weakening
anything: no checkpoint thread for a file done before a checkpoint is due, and the simulator's
small files are the same bytes as before."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pipeline.audit import AuditLog
from pipeline.errors import BookkeepingError
from pipeline.group_commit import GroupCommit
from pipeline.ledger import ListedFile, ListedRecording, StoredCopy, open_ledger
from pipeline.ledger.sqlite import SqliteLedger
from pipeline.simulator.content import Blocks, _seed
from tests.helpers import write_config
from tests.inprocess import run_main


class HeldSync:
    """Wraps a GroupCommit's fsync: each one is held until the test releases it (logic only)."""

    def __init__(self, group: GroupCommit):
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.syncs = 0
        real = group._fsync

        def held() -> None:
            self.syncs += 1
            self.started.release()
            self.release.acquire()
            real()
        group._fsync = held


def in_thread(target) -> tuple[threading.Thread, list]:
    done: list = []
    thread = threading.Thread(target=lambda: done.append(target()))
    thread.start()
    return thread, done


def test_a_claims_audit_line_returns_only_after_an_fsync_covering_it(tmp_path):
    """`verified` (a ledger row saying archived follows it) does not return while the fsync
    that covers it is held; `listed` returns at once, with no fsync of its own, and the next
    claim's fsync covers it too."""
    audit = AuditLog(tmp_path / "audit.jsonl", "run-1")
    held = HeldSync(audit._durable)
    audit.event("listed", recording_id="r1", status="UPLOADED")
    assert held.syncs == 0
    thread, done = in_thread(lambda: audit.event("verified", recording_id="r1", kind="video", target="nas"))
    held.started.acquire()  # the claim's fsync runs ...
    thread.join(0.2)
    assert done == []  # ... and the claim has not returned before it ends
    held.release.release()
    thread.join()
    assert done == [None] and held.syncs == 1
    audit.sync()  # both lines were covered by that one fsync: nothing left to sync
    assert held.syncs == 1
    audit.close()


def test_a_failed_fsync_fails_every_later_wait(tmp_path):
    """After an fsync failed, nothing written is known to be on disk: a later claim is refused
    (BookkeepingError), even though another fsync would now succeed."""
    audit = AuditLog(tmp_path / "audit.jsonl", "run-1")
    real, calls = audit._durable._fsync, []

    def fails_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise BookkeepingError("audit log: cannot sync it to disk: Input/output error")
        real()
    audit._durable._fsync = fails_once
    with pytest.raises(BookkeepingError):
        audit.event("verified", recording_id="r1", kind="video", target="nas")
    with pytest.raises(BookkeepingError):
        audit.sync()
    assert len(calls) == 1
    audit.close()


def _listed(rid: str) -> ListedRecording:
    return ListedRecording(id=rid, meeting_id="m", meeting_title="t", session_id="s", output_file_name=f"{rid}.mp4",
                           status="UPLOADED", invoked_time="2026-11-01T10:00:00.000Z", stopped_time=None,
                           url_expiry=None, deadline=None, metadata={}, files=(ListedFile("video", f"{rid}.mp4", 10),),
                           skipped=None)


def test_derived_ledger_rows_wait_for_no_fsync_and_the_next_durable_commit_covers_them(tmp_path):
    """A file's state (derived from its copies) returns without an fsync; a copy (the claim)
    waits for one, and that fsync covers the state written before it."""
    ledger = open_ledger(tmp_path / "ledger.db", command="run")
    assert isinstance(ledger, SqliteLedger)
    ledger.record_listing([_listed("r1")])
    held = HeldSync(ledger._durable)
    ledger.set_file_state("r1", "video", "archived")  # returns: nothing held it
    state_commit = ledger._durable.last
    assert held.syncs == 0
    copy = StoredCopy(key="k", uri="file:///k", size=10, sha256="0" * 64, native={}, version=None,
                      retention_mode=None, retention_until=None, legal_hold=False)
    thread, done = in_thread(lambda: ledger.record_copy("r1", "video", "nas", copy, verified_by="sha256"))
    held.started.acquire()
    thread.join(0.2)
    assert done == []  # the claim waits for its fsync
    held.release.release()
    thread.join()
    assert ledger._durable._synced >= ledger._durable.last > state_commit  # one fsync covered both
    ledger.close()


def test_in_a_run_every_archived_row_follows_its_audit_line_on_disk(sim, tmp_path, monkeypatch):
    """A real run (simulator, local target, manifests): when the ledger records a copy (file or
    manifest) as archived, the audit log's part known to be on disk (fsynced) already holds the
    line that says so."""
    durable = {"size": 0}
    real_fsync = AuditLog._fsync

    def noting_fsync(self) -> None:
        size = self.path.stat().st_size
        real_fsync(self)
        durable["size"] = max(durable["size"], size)
    monkeypatch.setattr(AuditLog, "_fsync", noting_fsync)
    checked = []
    real_record_copy = SqliteLedger.record_copy

    def checking_record_copy(self, recording_id, kind, target, copy, *, verified_by, **options):
        lines = (tmp_path / "audit.jsonl").read_bytes()[:durable["size"]].splitlines()
        actions = {"manifest": "manifest_stored"}
        assert any(e["action"] == actions.get(kind, "verified") and e["recording_id"] == recording_id
                   and e.get("kind", "manifest") == kind and e["target"] == target
                   for e in map(json.loads, lines)), f"{recording_id} {kind}: no durable audit line yet"
        checked.append(kind)
        return real_record_copy(self, recording_id, kind, target, copy, verified_by=verified_by, **options)
    monkeypatch.setattr(SqliteLedger, "record_copy", checking_record_copy)
    for _ in range(3):
        sim.add_recording(size=20_000)
    result = run_main("run", "--config", str(write_config(tmp_path, sim, archive={"manifest": True})))
    assert result.returncode == 0, result.stderr
    assert checked.count("manifest") == 3 and len(checked) >= 6


def test_a_small_download_starts_no_checkpoint_thread(sim, tmp_path, monkeypatch):
    """A file done before its first checkpoint is due costs no thread (the run's threads are the
    pools' only); the run still archives it."""
    from pipeline.archive import checkpoints
    started = []
    real_start = threading.Thread.start

    def noting_start(self):
        started.append(self.name)
        return real_start(self)
    monkeypatch.setattr(threading.Thread, "start", noting_start)
    sim.add_recording(size=30_000)
    result = run_main("run", "--config", str(write_config(tmp_path, sim)))
    assert result.returncode == 0, result.stderr
    assert "spool-sync" not in started and checkpoints.SYNC_MIN > 30_000


def test_simulated_small_files_are_the_beginning_of_the_whole_block():
    """The simulator draws only a small file's bytes: they are exactly the bytes the whole
    block holds there, for windows ending anywhere up to the block's last partial word."""
    blocks = Blocks()
    for rid in ("a", "b", "recording-3"):
        whole, period = blocks.get(rid, "v0")
        words = period - period % 4
        for start, end in ((0, 1), (0, 3), (5, 4099), (100, 50_001), (0, words), (words - 5, words + 2),
                           (period - 7, period), (10, period + 50)):
            got = b"".join(bytes(w) for w in blocks.windows(rid, "v0", start, end, 1000))
            assert got == bytes(whole[start:end]), (rid, start, end)
    assert _seed("a", "v0")[1] == blocks.get("a", "v0")[1]


def test_a_listing_that_fails_while_a_batch_is_archived_ends_the_run_after_that_batch(sim, tmp_path, monkeypatch):
    """The next batch is listed while one is archived: when that listing fails (the API refuses
    the second page), the batch in hand is still archived, then the run ends as a listing
    failure (exit 4) with the reason recorded, as when it was listed in turn."""
    from pipeline import errors
    from pipeline.archive import run as archive_run
    from tests.helpers import ledger_rows
    monkeypatch.setattr(archive_run, "LISTING_BATCH", 3)
    real_plan, planned = archive_run.plan, []

    def plan_then_refuse(context, recordings):
        planning = real_plan(context, recordings)
        if not planned:
            sim.faults.set(forbidden=-1)  # every API call from now on: the second page fails
        planned.append(len(planning.plans))
        return planning
    monkeypatch.setattr(archive_run, "plan", plan_then_refuse)
    for i in range(7):
        sim.add_recording(size=20_000 + i)
    try:
        result = run_main("run", "--config", str(write_config(tmp_path, sim, source={"per_page": 3})))
    finally:
        sim.faults.reset()
    assert result.returncode == errors.EXIT_API, result.stderr
    assert planned == [3]
    states = [r["state"] for r in ledger_rows(tmp_path / "ledger.db", "SELECT state FROM recordings")]
    assert states == ["archived"] * 3
    runs = ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, note FROM runs")
    assert runs[-1]["exit_code"] == errors.EXIT_API and runs[-1]["note"]
