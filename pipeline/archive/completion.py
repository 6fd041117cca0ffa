"""Completing a recording: at each target that holds every one of its files, a manifest
(written, or put back when verify found it missing; an altered one is reported and never
overwritten), then the recording's state; and, after the run, recordings whose 7 days ended
before they were archived are reported lost."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.archive import manifest
from pipeline.archive import object_keys as keys
from pipeline.archive.bookkeeping import Book
from pipeline.archive.store import ascii_metadata, put_with_retries, stored_copy
from pipeline.archive.verification import verify_copy
from pipeline.clock import from_iso, utcnow
from pipeline.errors import VerificationError, os_reason
from pipeline.archive.evidence.manifest_signatures import sign_stored_manifest
from pipeline.archive.evidence.signing import Keyring
from pipeline.ledger import PROBLEM_STATES, CopyRow, FileRow
from storage import LocalFile, NotFound, ObjectConflict, StorageError, StoredObject, Target

log = logging.getLogger("rtk_archive.archive")


class Completion:
    def __init__(self, book: Book, targets: dict[str, Target], unavailable: dict[str, str]):
        self.book = book
        self.context = book.context
        self.ledger = book.context.ledger
        self.targets = targets
        self.unavailable = unavailable  # targets left out of this run: no manifest there now
        self.keyring = Keyring.from_config(book.context.config.signing)  # signs each new manifest

    def complete_from_ledger(self, *, done: set[str]) -> None:
        """Revisit, from the ledger alone, the recordings this run did not plan (RealtimeKit may
        no longer list them) that lack a verified manifest at a target: a manifest that is
        missing there (deleted, or its put failed) is put back like any other copy."""
        if self.context.stop.is_set() or not self.context.config.archive.manifest:
            return
        for rid in self.ledger.recordings_without_manifest():
            if self.context.stop.is_set():
                return
            if rid not in done:
                self.complete(rid)

    def complete(self, rid: str, metadata: dict | None = None) -> None:
        """At each target that holds every file of the recording: its manifest; then the
        recording's state. `metadata`: the recording as this run listed it (else the ledger's)."""
        files = self.ledger.files(rid)
        copies = self.ledger.copies(rid)
        if self.context.config.archive.manifest and files:
            for name, target in self.targets.items():
                if name in self.unavailable:
                    continue
                complete_here = all(_archived(copies, f.kind, name) for f in files)
                if complete_here and not _archived(copies, keys.MANIFEST, name):
                    if metadata is None:
                        metadata = self._metadata_from_ledger(rid)
                    self._write_manifest(rid, metadata, target, files, copies, copies.get((keys.MANIFEST, name)))
        states = {f.state for f in files}
        # (the recording's own files: its manifests, just written, do not decide this)
        complete = files and all(_archived(copies, f.kind, name) for f in files for name in self.targets)
        if complete:
            self.ledger.set_recording_state(rid, "archived")
        elif "lost" in states:
            self.ledger.set_recording_state(rid, "lost", "RealtimeKit no longer serves the files")
        elif "failed" in states:
            self.ledger.set_recording_state(rid, "failed", "see the files' errors")

    def _metadata_from_ledger(self, rid: str) -> dict:
        row = self.ledger.recording(rid)
        return dict(row.metadata, id=rid) if row else {"id": rid}

    def _write_manifest(self, rid: str, metadata: dict, target: Target, files: list[FileRow], copies,
                        existing: CopyRow | None) -> None:
        # Where it was (a missing or failed one goes back there), else where the template puts it.
        key = existing.key if existing else self._manifest_key(target, rid, metadata)
        if existing is not None and existing.state in PROBLEM_STATES and not self._manifest_gone(target, existing):
            return
        body = manifest.build_manifest(recording=metadata, files=files, copies=copies,
                                       target_types={n: t.type for n, t in self.targets.items()},
                                       run_id=self.context.run_id)
        spool = self.context.config.archive.spool_dir / \
            f"{keys.sanitise_component(rid, fallback='r')}.{target.name}.manifest"
        try:
            local, data = _spool_manifest(body, spool)
            stored, verified_by, data = self._put_manifest(target, key, local, data, body, rid)
        except (StorageError, VerificationError, ValueError, OSError) as exc:
            detail = str(exc)
            if isinstance(exc, OSError) and not isinstance(exc, StorageError):  # the spool cannot take it
                detail = f"cannot write it in the spool folder {spool.parent}: {os_reason(exc)}"
            reason = f"manifest: {detail}"
            self.book.count(copies_failed=1)
            self.book.audit("failed", recording_id=rid, kind=keys.MANIFEST, target=target.name, reason=reason)
            self.ledger.record_copy_failure(rid, keys.MANIFEST, target.name, key=key, error=reason)
            self.book.problem(f"recording {rid} manifest -> {target.name}: {detail}")
            return
        finally:
            spool.unlink(missing_ok=True)
        # The trail first: the ledger never says archived without the audit line that says so.
        self.book.audit("manifest_stored", recording_id=rid, target=target.name, key=key, uri=stored.uri,
                        sha256=stored.sha256)
        # Not waited for: the next durable commit (or the ledger's close) carries it. A power cut
        # before then loses only this row; the next run stores the manifest again, meets this one
        # (ObjectConflict), finds it lists the same files and takes it (_put_manifest).
        self.ledger.record_copy(rid, keys.MANIFEST, target.name, stored_copy(key, stored), verified_by=verified_by,
                                durable=False)
        sign_stored_manifest(self.book, self.keyring, target, rid, key, data)

    def _put_manifest(self, target: Target, key: str, local: LocalFile, data: bytes, body: dict, rid: str
                      ) -> tuple[StoredObject, str, bytes]:
        """The manifest stored and verified, and its bytes as stored (what its signature signs)."""
        try:
            stored = put_with_retries(self.book, target, key, local, {"rtk_recording_id": ascii_metadata(rid),
                                                                       "rtk_kind": keys.MANIFEST})
            return stored, verify_copy(local, stored, target.name), data
        except ObjectConflict:
            # A killed run may have stored it without noting it: accept it if it lists the same files.
            with target.open_read(key) as stream:
                raw = stream.read()
            if not manifest.manifest_files_match(json.loads(raw), body):
                raise
            return target.stat(key), "existing manifest lists the same files", raw

    def _manifest_gone(self, target: Target, existing: CopyRow) -> bool:
        """A manifest `verify` found missing or altered is written again only where nothing is
        under its key any more; an object there is left as found and reported."""
        try:
            found = target.stat(existing.key)
        except NotFound:
            return True
        except StorageError as exc:
            self.book.problem(f"recording {existing.recording_id} manifest -> {target.name}: {exc}")
            return False
        self.book.problem(
            f"recording {existing.recording_id} manifest -> {target.name}: {found.uri} was found {existing.state} by "
            f"verify ({existing.verify_result}); it is left as found, never overwritten: `verify --deep` clears it "
            "if it is the original again; move it away to have a new one written")
        return False

    def _manifest_key(self, target: Target, rid: str, metadata: dict) -> str:
        template = target.settings.key_template or self.context.config.archive.key_template
        invoked = metadata.get("invoked_time")
        return keys.manifest_key(template, recording_id=rid, meeting_id=metadata.get("meeting_id"),
                                 session_id=metadata.get("session_id"), when=from_iso(invoked) if invoked else None)

    def mark_lost_past_deadline(self) -> None:
        """A recording the ledger knows, not archived, whose 7 days are over, is lost: say so."""
        for row in self.ledger.at_risk(utcnow()):
            reason = "RealtimeKit's 7-day retention ended before every file was archived"
            self.ledger.set_recording_state(row.id, "lost", reason)
            self.book.count(lost=1, recordings_lost=1)
            self.book.audit("lost", recording_id=row.id, reason=reason)
            self.book.problem(f"recording {row.id}: lost: {reason}")


def _archived(copies: dict, kind: str, target: str) -> bool:
    copy = copies.get((kind, target))
    return copy is not None and copy.archived


def _spool_manifest(body: dict, spool: Path) -> tuple[LocalFile, bytes]:
    """The manifest as a private spool file (the spool folder may not exist yet when this run
    downloaded nothing)."""
    try:
        return manifest.write_local(body, spool)
    except FileNotFoundError:
        spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return manifest.write_local(body, spool)
