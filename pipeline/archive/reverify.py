"""`rtk-archive verify`: check every copy the ledger knows at its target, by size and the
stored and backend checksums, or with `deep` also by re-reading and re-hashing the bytes.

Copies in every state are checked: archived ones, and recorded problems (missing, mismatch,
and failed copies that have an object at the target) again. A recorded problem stays one until
it is resolved: only a deep verification that re-reads the bytes and finds them identical (or
a fresh verified copy put by `run`) clears it; a shallow check that finds the size and checksums
right again says so and leaves the problem recorded, since an alteration that keeps them is
exactly what a shallow check cannot see.

Results go to the audit log, then to the ledger (a missing or altered copy is no longer
`archived`, so the next run deals with it). When they cannot be recorded (a read-only ledger,
an audit log that cannot be written), verify still checks and reports, says so in one warning
line, and exits by what it found."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline.archive.context import Context
from pipeline.archive.store import stored_copy
from pipeline.archive.verification import compare_bytes, compare_copy, read_back
from pipeline.clock import iso_utc
from pipeline.errors import BookkeepingError
from pipeline.archive.evidence.manifest_signatures import check_signatures
from pipeline.archive.evidence.signing import signature_key
from pipeline.ledger import CopyRow, FileRow
from storage import NotFound, StorageError, StoredObject, Target

log = logging.getLogger("rtk_archive.verify")


@dataclass
class VerifyOutcome:
    checked: int = 0
    ok: int = 0
    problems: list[dict] = field(default_factory=list)
    recorded: bool = True  # False: the results could not be recorded (see the warning line)
    signed_by: dict[str, str] = field(default_factory=dict)  # "target:manifest key" -> id of the key that signed it
    not_started: int = 0  # a scrub's time budget ran out before these copies were checked


def verify_archive(context: Context, *, target: str | None, since, until, deep: bool) -> VerifyOutcome:
    """Check every copy the ledger knows (of `target` only, when given) in the window. Results
    are recorded when the context records; otherwise checked and reported only."""
    return check_copies(context, lambda: context.ledger.copies_to_verify(target=target, since=iso_utc(since),
                                                                         until=iso_utc(until)),
                        deep_at=lambda _target: deep,
                        started={"deep": deep, "target": target, "since": iso_utc(since), "until": iso_utc(until)})


def check_copies(context: Context, select: Callable[[], list[CopyRow]], *, deep_at: Callable[[Target], bool],
                 started: dict, deadline: float | None = None) -> VerifyOutcome:
    """Check the copies `select` returns, in its order (deep at the targets `deep_at` names);
    with a `deadline` (time.monotonic), start no check after it, except the first copy's."""
    outcome = VerifyOutcome(recorded=context.recording)
    audit = context.audit
    with context.noting_audit_head():
        if audit is not None:
            audit.event("verify_started", **started)
        rows = select()
        # The downloaded files' sizes and digests, read in batches: what each copy must be.
        files = {rid: known.files for rid, known in context.ledger.known(sorted({r.recording_id for r in rows})).items()}
        checker = _Checker(context, deep_at, outcome, files, deadline, first=rows[0] if rows else None)
        with ThreadPoolExecutor(context.config.archive.concurrency) as pool:
            list(pool.map(checker.check, rows))
        missing = {(p["recording_id"], p["target"]) for p in outcome.problems
                   if p["kind"] == "manifest" and p["state"] == "missing"}
        checker.record_signatures(check_signatures(context, rows, flagged=missing))
        if audit is not None:
            audit.event("verify_finished", **started, checked=outcome.checked, ok=outcome.ok,
                        problems=len(outcome.problems), not_started=outcome.not_started)
    return outcome


class _Checker:
    def __init__(self, context: Context, deep_at: Callable[[Target], bool], outcome: VerifyOutcome,
                 files: dict[str, dict[str, FileRow]], deadline: float | None = None, first: CopyRow | None = None):
        self.ledger, self.audit, self.targets = context.ledger, context.audit, context.targets
        self.files = files
        self.deep_at, self.outcome = deep_at, outcome
        self._local = threading.local()  # `deep`: whether the copy this thread checks is re-read
        self._deadline, self._first = deadline, first
        self._lock = threading.Lock()
        self._halted = threading.Event()  # recording failed: start no further check

    @property
    def deep(self) -> bool:
        return getattr(self._local, "deep", False)

    @deep.setter
    def deep(self, value: bool) -> None:
        self._local.deep = value

    def check(self, row: CopyRow) -> None:
        if self._halted.is_set() or not self._may_start(row):
            return
        try:
            self._check(row)
        except BookkeepingError:
            self._halted.set()
            raise

    def _may_start(self, row: CopyRow) -> bool:
        """Within the time budget (the first copy in order is always checked, so every scrub
        progresses, whichever thread gets there first)."""
        if self._deadline is None or row is self._first or time.monotonic() < self._deadline:
            return True
        with self._lock:
            self.outcome.not_started += 1
        return False

    def _check(self, row: CopyRow) -> None:
        target = self.targets.get(row.target)
        if target is None:
            self._problem(row, "unchecked", f"target '{row.target}' is no longer in the configuration", record=False)
            return
        self.deep = self.deep_at(target)
        size, digests = self._expected(row)
        if size is None and not digests.get("sha256"):  # a manifest whose put failed: nothing to compare
            self._problem(row, row.state, row.last_error or row.verify_result or "nothing recorded to compare with",
                          record=False)
            return
        try:
            stored = target.stat(row.key)
            problems, _compared = compare_copy(stored, size=size, digests=digests)
            if self.deep:
                problems += compare_bytes(read_back(target, row.key), size=size, sha256=digests.get("sha256"))
        except NotFound:
            if row.state == "failed":
                self._problem(row, "failed", f"not at the target; the run's error: {row.last_error}", record=False)
            else:
                self._problem(row, "missing", "the object is gone from the target")
            return
        except StorageError as exc:
            self._problem(row, "unchecked", f"could not check: {exc}", record=False)
            return
        if problems:
            self._problem(row, "mismatch", "; ".join(problems))
        elif row.state == "archived":
            self._ok(row, f"ok ({'deep: bytes re-read' if self.deep else 'size and stored checksums'})")
        elif self.deep:
            self._clear(row, target, stored, size, digests)
        else:
            was = row.verify_result if row.state != "failed" else row.last_error
            self._problem(row, row.state, f"recorded {row.state} ({was}); its size and checksums match now, but "
                          "only `verify --deep` (re-reading the bytes) clears it", record=False)

    def record_signatures(self, results) -> None:
        """Each manifest signature checked (pipeline.archive.evidence): a check of the `.sig` copy."""
        for row, state_or_key, detail in results:
            sig_row = dataclasses.replace(row, kind="manifest-signature", key=signature_key(row.key))
            if detail is None:
                self._count(ok=True)
                self.outcome.signed_by[f"{row.target}:{row.key}"] = state_or_key
            else:
                self._problem(sig_row, state_or_key, detail, record=False)

    def _expected(self, row: CopyRow) -> tuple[int | None, dict]:
        """What the copy must be: the downloaded file's size and digests (for a manifest, the
        copy's own recorded size and SHA-256)."""
        file = self.files.get(row.recording_id, {}).get(row.kind)
        if file and file.sha256:
            return file.size, file.digests
        return row.size, {"sha256": row.sha256, **{k: v for k, v in row.native.items() if k != "sha256"}}

    def _clear(self, row: CopyRow, target: Target, stored: StoredObject, size, digests) -> None:
        """A recorded problem whose object, re-read, is the archived file's exact bytes: archived
        again, as found, if it also carries the write-once protection a fresh put would need."""
        retention_problems, _ = compare_copy(stored, size=size, digests=digests,
                                             protection=target.settings)
        if retention_problems:
            self._problem(row, "mismatch", "; ".join(retention_problems))
            return
        was = row.verify_result if row.state != "failed" else row.last_error
        result = f"ok (deep: bytes re-read); clears {row.state} ({was})"
        self._count(ok=True)
        if self.audit is None:
            return
        self.audit.event("verify_ok", recording_id=row.recording_id, kind=row.kind, target=row.target,
                         key=row.key, deep=True, cleared=row.state)
        self.ledger.clear_problem(row.recording_id, row.kind, row.target, stored_copy(row.key, stored), result=result)

    def _ok(self, row: CopyRow, result: str) -> None:
        self._count(ok=True)
        if self.audit is None:
            return
        self.audit.event("verify_ok", recording_id=row.recording_id, kind=row.kind, target=row.target,
                         key=row.key, deep=self.deep)
        self.ledger.record_verification(row.recording_id, row.kind, row.target, state="archived", result=result)

    def _problem(self, row: CopyRow, state: str, detail: str, *, record: bool = True) -> None:
        self._count(ok=False, problem={"recording_id": row.recording_id, "kind": row.kind, "target": row.target,
                                       "key": row.key, "state": state, "detail": detail})
        log.error("%s %s at %s: %s", state, row.key, row.target, detail)
        if self.audit is None:
            return
        # The trail first: the ledger never holds a result the audit log does not.
        self.audit.event("verify_failed", recording_id=row.recording_id, kind=row.kind, target=row.target,
                         key=row.key, state=state, reason=detail, deep=self.deep)
        if record:
            self.ledger.record_verification(row.recording_id, row.kind, row.target, state=state, result=detail)

    def _count(self, *, ok: bool, problem: dict | None = None) -> None:
        with self._lock:
            self.outcome.checked += 1
            if ok:
                self.outcome.ok += 1
            if problem:
                self.outcome.problems.append(problem)
