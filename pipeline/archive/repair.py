"""`rtk-archive repair`: put back every recording-file copy that is missing or altered at its
target, from a good copy at another target.

Which copies: those `verify` recorded missing or altered (and failed copies never stored),
and archived ones a look now finds missing or altered (by size and the stored and backend
checksums). A recorded problem whose object, re-read, holds the file's exact bytes is cleared
as found. For each copy to repair:

- a source: another target's copy of the same file, archived ones first; its bytes are
  streamed into the spool while their SHA-256 is computed and compared with the one the ledger
  recorded at download; a source that differs (or is gone) is skipped, reported and recorded
  as the problem it is. No good source anywhere: reported, nothing changed (exit 1).
- an altered object is never overwritten: where it may be removed, it is first copied aside
  to `quarantine/<key>` at the same target (create-only, verified) and then removed, and the
  output and the audit trail say so; where its retention or legal hold forbids removal, it is
  reported and left as it is.
- the good bytes are put under the same key with the same create-only put as `run`, the new
  copy is verified by the one comparison (pipeline.archive.verification), and recorded: the
  audit line first, then the ledger (the problem cleared).

`--dry-run` reads only: it checks the copies and re-reads the sources (hashing without
spooling) and says what it would do; nothing is stored, moved, or recorded.

While RealtimeKit still serves a recording, `run` downloads a missing copy again as always;
`repair` is for when the archive's own copies are all that is left (or the quicker way)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from pipeline.archive.bookkeeping import Book
from pipeline.archive.context import Context
from pipeline.archive.object_keys import MANIFEST
from pipeline.archive.quarantine import QuarantineRefused, move_aside, removal_forbidden, spooled_copy
from pipeline.archive.spool import prepare_spool
from pipeline.archive.store import ascii_metadata, put_with_retries, stored_copy
from pipeline.archive.verification import compare_bytes, compare_copy, read_back, verify_copy
from pipeline.clock import iso_utc
from pipeline.errors import VerificationError
from pipeline.ledger import PROBLEM_STATES, CopyRow, FileRow, Known
from storage import NotFound, StorageError, StoredObject, Target

log = logging.getLogger("rtk_archive.repair")


@dataclass
class RepairItem:
    """One copy that needed repair, and what became of it."""

    recording_id: str
    kind: str
    target: str
    key: str
    found: str  # missing | altered | failed (never stored)
    outcome: str  # repaired | would repair | cleared | left | no source | failed
    detail: str
    source: str | None = None  # the target the good bytes came from
    quarantined: str | None = None  # where the altered object was moved to
    skipped_sources: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.outcome in ("repaired", "would repair", "cleared")


@dataclass
class RepairOutcome:
    dry_run: bool
    checked: int = 0
    items: list[RepairItem] = field(default_factory=list)

    @property
    def left(self) -> list[RepairItem]:
        return [item for item in self.items if not item.done]

    def as_dicts(self) -> list[dict]:
        return [asdict(item) for item in self.items]


class _Found(Exception):
    """What is wrong with a copy at its own target: `state` missing | altered, with `stored`
    when an (altered) object is there."""

    def __init__(self, state: str, detail: str, stored: StoredObject | None = None):
        super().__init__(detail)
        self.state, self.detail, self.stored = state, detail, stored


def repair_archive(context: Context, *, target: str | None, dry_run: bool) -> RepairOutcome:
    """Repair the recording-file copies at `target` (every target when None)."""
    outcome = RepairOutcome(dry_run=dry_run)
    audit = context.audit
    with context.noting_audit_head():
        if audit is not None:
            audit.event("repair_started", target=target)
        rows = [r for r in context.ledger.copies_to_verify(target=target) if r.kind != MANIFEST]
        known = context.ledger.known(sorted({r.recording_id for r in rows}))
        if not dry_run:
            prepare_spool(context.config.archive.spool_dir)
        repairer = _Repairer(context, dry_run, outcome)
        for row in rows:
            if context.stop.is_set():
                break
            repairer.repair(row, known[row.recording_id])
        if audit is not None:
            audit.event("repair_finished", checked=outcome.checked,
                        repaired=sum(item.outcome == "repaired" for item in outcome.items),
                        left=len(outcome.left))
    return outcome


class _Repairer:
    def __init__(self, context: Context, dry_run: bool, outcome: RepairOutcome):
        self.context, self.dry_run, self.outcome = context, dry_run, outcome
        self.ledger, self.audit, self.targets = context.ledger, context.audit, context.targets
        self.book = Book(context)
        self.spool = context.config.archive.spool_dir

    def repair(self, row: CopyRow, known: Known) -> None:
        file = known.files.get(row.kind)
        target = self.targets.get(row.target)
        if file is None or not file.sha256 or target is None:
            return  # nothing recorded to compare with, or a target no longer configured (verify says so)
        self.outcome.checked += 1
        try:
            self._look(row, target, file)
            return  # intact
        except _Found as found:
            item = RepairItem(row.recording_id, row.kind, row.target, row.key, found.state, "", "")
            self.outcome.items.append(item)
            self._put_back(item, row, target, file, known, found)
        except StorageError as exc:
            self.outcome.items.append(RepairItem(row.recording_id, row.kind, row.target, row.key, row.state,
                                                 "left", f"could not check it: {exc}"))
            return
        if item.done:
            log.info("%s %s at %s: %s", item.outcome, row.key, row.target, item.detail)
        else:
            log.error("%s %s at %s: %s", item.outcome.upper(), row.key, row.target, item.detail)

    # ------------------------------------------------------------------ what is wrong with the copy

    def _look(self, row: CopyRow, target: Target, file: FileRow) -> None:
        """Return when the copy is intact; raise _Found with what is wrong otherwise. An
        archived copy is checked by size and checksums; a recorded problem is re-read too."""
        try:
            stored = target.stat(row.key)
        except NotFound:
            raise _Found("failed" if row.state == "failed" else "missing",
                         "never stored" if row.state == "failed" else "the object is gone from the target") from None
        problems, _ = compare_copy(stored, size=file.size, digests=file.digests)
        if not problems and row.state not in (*PROBLEM_STATES, "failed"):
            return
        if not problems:
            problems = compare_bytes(read_back(target, row.key), size=file.size, sha256=file.sha256)
        if problems:
            raise _Found("altered", "; ".join(problems), stored)
        self._clear_as_found(row, target, stored, file)

    def _clear_as_found(self, row: CopyRow, target: Target, stored: StoredObject, file: FileRow) -> None:
        """A recorded problem whose object, re-read, is the file's exact bytes: archived again, as
        found, if it also carries the write-once protection the target asks for."""
        protection, _ = compare_copy(stored, size=file.size, digests=file.digests, protection=target.settings)
        if protection:
            raise _Found("altered", "; ".join(protection), stored)
        item = RepairItem(row.recording_id, row.kind, row.target, row.key, row.state, "cleared",
                          "its bytes, re-read, are the archived file's: nothing to put back")
        self.outcome.items.append(item)
        if self.audit is None:
            return
        self.audit.event("verify_ok", recording_id=row.recording_id, kind=row.kind, target=row.target,
                         key=row.key, deep=True, cleared=row.state)
        self.ledger.clear_problem(row.recording_id, row.kind, row.target, stored_copy(row.key, stored),
                                  result=f"ok (repair: bytes re-read); clears {row.state}")

    # ------------------------------------------------------------------ putting it back

    def _put_back(self, item: RepairItem, row: CopyRow, target: Target, file: FileRow, known: Known,
                  found: _Found) -> None:
        forbidden = removal_forbidden(target, found.stored) if found.stored is not None else None
        if forbidden:
            self._left(item, row, found, "left", f"{found.detail}; {forbidden}: left in place, not repaired")
            return
        sources = self._siblings(row, known)
        if self.dry_run:
            item.source = self._check_sources(item, file, sources)
            if item.source is None:
                self._no_source(item, row, found, known)
            else:
                aside = f"move the altered object aside to quarantine/{row.key}, then " if found.stored else ""
                item.outcome, item.detail = "would repair", f"{found.detail}; would {aside}put it back from {item.source}"
            return
        for source, key in sources:
            try:
                with spooled_copy(source, key, self.spool, md5=target.uses_md5) as local:
                    problems = compare_bytes((local.size, local.checksums.sha256), size=file.size, sha256=file.sha256)
                    if problems:
                        self._bad_source(item, row, source, key, "mismatch", problems[0])
                        continue
                    item.source = source.name
                    self._store(item, row, target, local, found)
                    return
            except NotFound:
                self._bad_source(item, row, source, key, "missing", "the object is gone from the target")
            except StorageError as exc:
                item.skipped_sources.append(f"{source.name}: could not read it: {exc}")
        self._no_source(item, row, found, known)

    def _siblings(self, row: CopyRow, known: Known) -> list[tuple[Target, str]]:
        """The other configured targets that hold a copy of the file, with its key there:
        archived ones first, each group most recently verified first."""
        copies = [c for (kind, name), c in known.copies.items()
                  if kind == row.kind and name != row.target and name in self.targets and c.key]
        copies.sort(key=lambda c: c.verified_at or "", reverse=True)
        copies.sort(key=lambda c: c.state != "archived")  # stable: keeps the recency within each group
        return [(self.targets[c.target], c.key) for c in copies]

    def _check_sources(self, item: RepairItem, file: FileRow, sources: list[tuple[Target, str]]) -> str | None:
        """Dry run: the first source whose bytes, re-read (not stored anywhere), are the file's."""
        for source, key in sources:
            try:
                problems = compare_bytes(read_back(source, key), size=file.size, sha256=file.sha256)
            except NotFound:
                problems = ["the object is gone from the target"]
            except StorageError as exc:
                item.skipped_sources.append(f"{source.name}: could not read it: {exc}")
                continue
            if not problems:
                return source.name
            item.skipped_sources.append(f"{source.name}: {problems[0]}")
        return None

    def _store(self, item: RepairItem, row: CopyRow, target: Target, local, found: _Found) -> None:
        rid, kind = row.recording_id, row.kind
        try:
            if found.stored is not None:
                item.quarantined = move_aside(target, row.key, self.spool, md5=target.uses_md5,
                                              audit=self.book.audit, recording_id=rid, kind=kind)
        except QuarantineRefused as exc:
            item.quarantined = exc.quarantine_key
            self._left(item, row, found, "left", f"{found.detail}; {exc}")
            return
        except (StorageError, VerificationError) as exc:
            self._left(item, row, found, "failed", f"{found.detail}; copying it aside failed, so it was left in "
                                                   f"place: {exc}")
            return
        try:
            stored = put_with_retries(self.book, target, row.key, local,
                                      {"rtk_recording_id": ascii_metadata(rid), "rtk_kind": kind})
            self.book.audit("stored", recording_id=rid, kind=kind, target=target.name, key=row.key, uri=stored.uri)
            verified_by = verify_copy(local, stored, target.name, protection=target.settings)
        except (StorageError, VerificationError) as exc:
            self._left(item, row, found, "failed", f"{found.detail}; putting it back from {item.source} failed: {exc}")
            return
        aside = f"; the altered object was moved to {item.quarantined}" if item.quarantined else ""
        item.outcome, item.detail = "repaired", f"{found.detail}; put back from {item.source}{aside}"
        # The trail first: the ledger never says archived without the audit line that says so.
        self.book.audit("repaired", recording_id=rid, kind=kind, target=target.name, key=row.key,
                        source=item.source, found=found.state, quarantined=item.quarantined,
                        sha256=local.checksums.sha256, size=local.size, verified_by=verified_by)
        self.ledger.clear_problem(rid, kind, target.name, stored_copy(row.key, stored),
                                  result=f"ok (repaired from {item.source}{aside})",
                                  verified_by=f"repair from {item.source}: {verified_by}")

    # ------------------------------------------------------------------ what could not be done

    def _bad_source(self, item: RepairItem, row: CopyRow, source: Target, key: str, state: str, detail: str) -> None:
        """A sibling that is not the file after all: skipped, and recorded as what it is."""
        item.skipped_sources.append(f"{source.name}: {detail}")
        log.error("%s %s at %s (a repair source): %s", state, row.key, source.name, detail)
        if self.audit is None:
            return
        self.audit.event("verify_failed", recording_id=row.recording_id, kind=row.kind, target=source.name,
                         key=key, state=state, reason=detail, deep=True)
        self.ledger.record_verification(row.recording_id, row.kind, source.name, state=state, result=detail)

    def _no_source(self, item: RepairItem, row: CopyRow, found: _Found, known: Known) -> None:
        skipped = f" (skipped: {'; '.join(item.skipped_sources)})" if item.skipped_sources else ""
        detail = f"{found.detail}; no good copy at any other target to repair it from{skipped}"
        deadline = known.recording.deadline if known.recording else None
        if deadline and deadline > iso_utc(datetime.now(timezone.utc)):
            detail += f"; until RealtimeKit deletes its copy ({deadline}) `run` can download it again"
        self._left(item, row, found, "no source", detail)

    def _left(self, item: RepairItem, row: CopyRow, found: _Found, outcome: str, detail: str) -> None:
        item.outcome, item.detail = outcome, detail
        if self.audit is None:
            return
        self.audit.event("repair_failed", recording_id=row.recording_id, kind=row.kind, target=row.target,
                         key=row.key, found=found.state, outcome=outcome, reason=detail,
                         quarantined=item.quarantined)
        if found.state != "failed":  # a copy never stored stays `failed`
            state = "mismatch" if found.state == "altered" else "missing"
            self.ledger.record_verification(row.recording_id, row.kind, row.target, state=state, result=detail)
