"""`[audit] ship_to`: after a run, a snapshot of the audit log is copied to the named targets,
verified there like any copy, so the trail outlives the machine that wrote it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline import errors
from pipeline.archive.bookkeeping import Book
from pipeline.archive.hashing import hash_file
from pipeline.archive.store import put_with_retries
from pipeline.archive.verification import verify_copy
from pipeline.clock import utcnow
from storage import LocalFile, StorageError


def ship_audit_log(book: Book, unavailable: dict[str, str]) -> None:
    """Copy the audit log, as it stands, to the targets named in [audit] ship_to."""
    context = book.context
    config = context.config
    if not config.audit.ship_to:
        return
    context.audit.sync()
    snapshot = config.archive.spool_dir / f"audit-{context.run_id}.jsonl"
    try:
        try:
            local = _snapshot(config.audit.path, snapshot)
        except OSError as exc:
            book.problem(f"audit log: cannot copy it to {snapshot} to ship it: {errors.os_reason(exc)}")
            book.count(failed=1)
            return
        key = f"audit/{utcnow().strftime('%Y/%m/%d')}/rtk-archive-audit-{context.run_id}.jsonl"
        for name in config.audit.ship_to:
            if name in unavailable:
                continue  # left out of this run, reported once already
            target = context.targets[name]
            try:
                stored = put_with_retries(book, target, key, local, {"rtk_kind": "audit"})
                verify_copy(local, stored, name)
            except (StorageError, errors.VerificationError) as exc:
                book.problem(f"audit log -> {name}: {exc}")
                book.count(failed=1, copies_failed=1)
                continue
            book.audit("audit_shipped", target=name, key=key, uri=stored.uri, sha256=local.checksums.sha256,
                       lines=context.audit.seq)
    finally:
        snapshot.unlink(missing_ok=True)


def _snapshot(source: Path, snapshot: Path) -> LocalFile:
    """A private copy of the log in the spool (the log keeps growing while it is shipped)."""
    snapshot.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(source, "rb") as src, os.fdopen(os.open(snapshot, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600),
                                              "wb") as dst:
        shutil.copyfileobj(src, dst)
    hasher = hash_file(snapshot)
    return LocalFile(path=snapshot, size=hasher.size, checksums=hasher.checksums())
