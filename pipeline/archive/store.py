"""Storing one copy, written once for every kind of copy (recording files, manifests, shipped
audit logs): put it at the target with bounded retries, compare what the target then holds
with the file (pipeline.archive.verification), and only then record it: the audit line first,
then the ledger. A copy that fails is recorded as failed with its one-line reason."""

from __future__ import annotations

import logging

from pipeline import retry
from pipeline.archive.bookkeeping import Book
from pipeline.archive.verification import compare_bytes, read_back, verify_copy
from pipeline.errors import VerificationError
from pipeline.ledger import PROBLEM_STATES, StoredCopy
from storage import GrowingFile, LocalFile, NotFound, ObjectConflict, StorageError, StoredObject, Target

log = logging.getLogger("rtk_archive.store")


def stored_copy(key: str, stored: StoredObject) -> StoredCopy:
    """What the ledger keeps of a copy read back from its target."""
    retention = stored.retention
    return StoredCopy(key=key, uri=stored.uri, size=stored.size, sha256=stored.sha256, native=dict(stored.native),
                      version=stored.version, retention_mode=retention.mode if retention else None,
                      retention_until=retention.until if retention else None,
                      legal_hold=bool(retention and retention.legal_hold))


def put_with_retries(book: Book, target: Target, key: str, local: LocalFile, metadata: dict, *,
                     attempts: int | None = None) -> StoredObject:
    """`target.put`, retried while the target's failure is one that may pass (bounded by
    [archive] upload_attempts and retry_max_seconds)."""
    settings = book.context.config.archive
    return retry.policy(retry=retry.on_exception(lambda e: isinstance(e, StorageError) and e.retryable),
                        attempts=attempts or settings.upload_attempts, seconds=settings.retry_max_seconds,
                        log=log, what=f"{target.name} {key}")(target.put, local, key, metadata)


def put_growing_with_retries(book: Book, target: Target, key: str, source: GrowingFile, metadata: dict) -> StoredObject:
    """`target.put_growing` while the file downloads; a failure that may pass is retried with
    the finished file by put_with_retries, with the attempts left (a retry would rarely catch
    up with the download anyway)."""
    attempts = book.context.config.archive.upload_attempts
    try:
        return target.put_growing(source, key, metadata)
    except StorageError as exc:
        if not exc.retryable or attempts < 2:
            raise
        log.warning("%s %s: %s; trying again once the file is downloaded", target.name, key, exc)
    return put_with_retries(book, target, key, source.result(), metadata, attempts=attempts - 1)


def store_file(book: Book, target: Target, rid: str, kind: str, key: str, local: LocalFile | GrowingFile) -> str | None:
    """Put one recording file at one target, verify it there, record it. Returns the failure
    reason, or None when the copy is archived. `local` may still be downloading (a GrowingFile,
    for a target with no problem copy, see waits_for_finished_file): the upload then runs
    beside the download and the copy is verified against the finished file; when that download
    fails, SourceFailed is raised and nothing is recorded here (the download's failure is)."""
    ledger = book.context.ledger
    metadata = {"rtk_recording_id": ascii_metadata(rid), "rtk_kind": kind}
    try:
        if isinstance(local, LocalFile):
            _refuse_altered(book, target, rid, kind, key, local)
            stored = put_with_retries(book, target, key, local, metadata)
        else:
            stored = put_growing_with_retries(book, target, key, local, metadata)
            local = local.result()  # (at hand: the upload read the verified end)
        book.audit("stored", recording_id=rid, kind=kind, target=target.name, key=key, uri=stored.uri)
        verified_by = verify_copy(local, stored, target.name, protection=target.settings)
    except (StorageError, VerificationError) as exc:
        if not isinstance(local, LocalFile):  # recorded after the download is, or not at all when it failed
            local.result()
        reason = str(exc)
        ledger.record_copy_failure(rid, kind, target.name, key=key, error=reason)
        book.problem(f"recording {rid} {kind} -> {target.name}: {reason}", recording_id=rid, file=kind,
                     target=target.name, error=reason)
        book.audit("failed", recording_id=rid, kind=kind, target=target.name, key=key, reason=reason)
        book.count(copies_failed=1)
        return reason
    # The trail first: the ledger never says archived without the audit line that says so.
    book.audit("verified", recording_id=rid, kind=kind, target=target.name, key=key, sha256=local.checksums.sha256,
               size=local.size, verified_by=verified_by, version=stored.version)
    ledger.record_copy(rid, kind, target.name, stored_copy(key, stored), verified_by=verified_by)
    book.count(copies_stored=1)
    log.info("archived recording %s %s -> %s %s (%d bytes, sha256 %s)", rid, kind, target.name, key, local.size,
             local.checksums.sha256, extra={"recording_id": rid, "file": kind, "target": target.name,
                                            "bytes": local.size, "sha256": local.checksums.sha256})
    return None


def waits_for_finished_file(book: Book, target: Target, rid: str, kind: str) -> bool:
    """A copy `verify` found missing or altered is stored again only from the finished file
    (_refuse_altered re-reads what is under its key first): no upload while it downloads."""
    return _problem_copy(book, target, rid, kind) is not None


def _problem_copy(book: Book, target: Target, rid: str, kind: str):
    """The ledger's row of this copy when `verify` found it missing or altered, else None."""
    prior = book.context.ledger.copies(rid, kind).get((kind, target.name))
    return prior if prior is not None and prior.state in PROBLEM_STATES else None


def _refuse_altered(book: Book, target: Target, rid: str, kind: str, key: str, local: LocalFile) -> None:
    """A copy `verify` found missing or altered: an object now under its key is taken as the
    copy only if its bytes, re-read, are the file's (`put` alone would accept an object whose
    size and checksums match, which is what an alteration that verify --deep found can do)."""
    prior = _problem_copy(book, target, rid, kind)  # (one ledger read)
    if prior is None:
        return
    try:
        existing = target.stat(key)
    except NotFound:
        return
    if existing.size != local.size:  # plainly not the file: no need to read it
        problems = [f"size is {existing.size}, expected {local.size}"]
    else:
        problems = compare_bytes(read_back(target, key), size=local.size, sha256=local.checksums.sha256)
    if problems:
        raise ObjectConflict(f"the object at {existing.uri}, found {prior.state} by verify, is still not the "
                             f"file: {problems[0]}; rtk-archive never overwrites: move it away", target=target.name)


def ascii_metadata(value: str) -> str:
    """Object metadata must be ASCII on S3: ids from the API are, but never trust them."""
    return value.encode("ascii", "backslashreplace").decode("ascii")[:256]
