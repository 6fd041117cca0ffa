"""`rtk-archive verify`: check every archived copy in the ledger at its target, by size and
stored SHA-256 (and the backend's own checksums), or with `deep` by re-reading and re-hashing
the bytes. Results go to the ledger (a missing or altered copy is no longer `archived`, so the
next run deals with it) and to the audit log."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline.audit import AuditLog
from pipeline.config import Config
from pipeline.ledger import CopyRow, Ledger, iso_utc
from pipeline.lock import RunLock
from pipeline.runner import open_targets
from storage.base import NotFound, StorageError, Target

log = logging.getLogger("rtk_archive.verify")
READ_CHUNK = 1 << 20


@dataclass
class VerifyOutcome:
    checked: int = 0
    ok: int = 0
    problems: list[dict] = field(default_factory=list)


def verify_archive(config: Config, *, target: str | None, since, until, deep: bool,
                   redact=lambda s: s) -> VerifyOutcome:
    outcome = VerifyOutcome()
    lock = RunLock(config.ledger.path).acquire("verify")
    try:
        ledger = Ledger(config.ledger.path)
        audit = AuditLog(config.audit.path, uuid.uuid4().hex, redact=redact)
        try:
            rows = ledger.archived_copies(target=target, since=iso_utc(since), until=iso_utc(until))
            with open_targets(config, only=target) as targets:
                checker = _Checker(ledger, audit, targets, deep, outcome)
                with ThreadPoolExecutor(config.archive.concurrency) as pool:
                    list(pool.map(checker.check, rows))
        finally:
            audit.close()
            ledger.close()
    finally:
        lock.release()
    return outcome


class _Checker:
    def __init__(self, ledger: Ledger, audit: AuditLog, targets: dict[str, Target], deep: bool,
                 outcome: VerifyOutcome):
        self.ledger, self.audit, self.targets, self.deep, self.outcome = ledger, audit, targets, deep, outcome
        self._lock = threading.Lock()

    def check(self, row: CopyRow) -> None:
        target = self.targets.get(row.target)
        if target is None:
            self._report(row, "unchecked", f"target '{row.target}' is no longer in the configuration", record=False)
            return
        expected_size, expected = self._expected(row)
        try:
            stored = target.stat(row.key)
            problems = _compare(stored, expected_size, expected)
            if self.deep and not problems:
                problems = self._rehash(target, row.key, expected_size, expected["sha256"])
        except NotFound:
            self._report(row, "missing", "the object is gone from the target")
            return
        except StorageError as exc:
            self._report(row, "unchecked", f"could not check: {exc}", record=False)
            return
        if problems:
            self._report(row, "mismatch", "; ".join(problems))
        else:
            with self._lock:
                self.outcome.checked += 1
                self.outcome.ok += 1
            how = "deep: bytes re-hashed" if self.deep else "size and stored checksums"
            self.ledger.record_verification(row.recording_id, row.kind, row.target, state="archived",
                                            result=f"ok ({how})")
            self.audit.event("verify_ok", recording_id=row.recording_id, kind=row.kind, target=row.target,
                             key=row.key, deep=self.deep)

    def _expected(self, row: CopyRow) -> tuple[int | None, dict]:
        """What the copy must be: the downloaded file's size and digests (for a manifest, the
        copy's own recorded size and SHA-256)."""
        file = self.ledger.file(row.recording_id, row.kind)
        if file and file["sha256"]:
            return file["size"], {"sha256": file["sha256"], "md5": file["md5"], "crc32c": file["crc32c"]}
        return row.size, {"sha256": row.sha256, **{k: v for k, v in row.native.items() if k != "sha256"}}

    def _rehash(self, target: Target, key: str, size: int | None, sha256: str | None) -> list[str]:
        digest = hashlib.sha256()
        count = 0
        with target.open_read(key) as stream:
            while chunk := stream.read(READ_CHUNK):
                digest.update(chunk)
                count += len(chunk)
        problems = []
        if size is not None and count != size:
            problems.append(f"read {count} bytes, expected {size}")
        if sha256 and digest.hexdigest() != sha256:
            problems.append("the bytes' SHA-256 differs from the archived file's (content altered)")
        return problems

    def _report(self, row: CopyRow, state: str, detail: str, *, record: bool = True) -> None:
        with self._lock:
            self.outcome.checked += 1
            self.outcome.problems.append({"recording_id": row.recording_id, "kind": row.kind, "target": row.target,
                                          "key": row.key, "state": state, "detail": detail})
        log.error("%s %s at %s: %s", state, row.key, row.target, detail)
        if record:
            self.ledger.record_verification(row.recording_id, row.kind, row.target, state=state, result=detail)
        self.audit.event("verify_failed", recording_id=row.recording_id, kind=row.kind, target=row.target,
                         key=row.key, state=state, reason=detail)


def _compare(stored, expected_size: int | None, expected: dict) -> list[str]:
    problems = []
    if expected_size is not None and stored.size != expected_size:
        problems.append(f"size is {stored.size}, archived file had {expected_size}")
    if stored.sha256 and expected.get("sha256") and stored.sha256 != expected["sha256"]:
        problems.append("the stored SHA-256 differs from the archived file's")
    for name, value in stored.native.items():
        if expected.get(name) and value.lower() != expected[name]:
            problems.append(f"the backend's {name} differs from the archived file's (content altered)")
    return problems

