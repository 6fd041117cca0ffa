"""Signing a manifest where it is stored, and checking every stored manifest's signature.

`sign_stored_manifest` puts `<manifest key>.sig` beside a manifest just stored (create-only,
verified like every copy, recorded: audit line first, then the ledger); `check_signature`
re-reads a manifest and its signature from a target and says which key signed it or what is
wrong (missing, malformed, unknown key, not matching the bytes)."""

from __future__ import annotations

import logging

from pipeline.archive import object_keys as keys
from pipeline.archive.hashing import hash_file
from pipeline.archive.store import ascii_metadata, put_with_retries
from pipeline.archive.verification import verify_copy
from pipeline.errors import VerificationError
from pipeline.archive.evidence.signing import Keyring, SignatureProblem, signature_key
from storage import LocalFile, NotFound, ObjectConflict, StorageError, Target

log = logging.getLogger("rtk_archive.signing")


def sign_stored_manifest(book, keyring: Keyring, target: Target, rid: str, manifest_key: str, data: bytes) -> None:
    """Sign `data` (the manifest's bytes as stored at `target`) and store the signature beside
    it. A failure is a recorded problem of this recording; the manifest itself stays archived."""
    signer = keyring.signer
    if signer is None:
        return
    context = book.context
    sig_key = signature_key(manifest_key)
    spool = context.config.archive.spool_dir / f"{keys.sanitise_component(rid, fallback='r')}.{target.name}.sig"
    try:
        document = signer.sign(data)
        spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        spool.write_bytes(document)
        hasher = hash_file(spool)
        local = LocalFile(path=spool, size=hasher.size, checksums=hasher.checksums())
        try:
            stored = put_with_retries(book, target, sig_key, local, {"rtk_recording_id": ascii_metadata(rid),
                                                                     "rtk_kind": "manifest-signature"})
            verify_copy(local, stored, target.name)
        except ObjectConflict:
            # A killed run may have stored it without noting it: keep it if it signs these bytes.
            with target.open_read(sig_key) as stream:
                keyring.verify(data, stream.read())
    except (StorageError, VerificationError, SignatureProblem, OSError) as exc:
        reason = f"manifest signature: {exc}"
        book.audit("failed", recording_id=rid, kind="manifest-signature", target=target.name, key=sig_key,
                   reason=reason)
        book.problem(f"recording {rid} manifest signature -> {target.name}: {exc}")
        book.count(copies_failed=1)
        return
    finally:
        spool.unlink(missing_ok=True)
    book.audit("manifest_signed", recording_id=rid, target=target.name, key=sig_key, key_id=signer.key_id)
    context.ledger.record_signature(rid, target.name, manifest_key=manifest_key, signature_key=sig_key,
                                    key_id=signer.key_id)


def check_signature(keyring: Keyring, target: Target, manifest_key: str) -> str:
    """The id of the key that signed the manifest at `target`, read back now; SignatureProblem
    when it is missing or does not verify; StorageError when the target cannot be read."""
    with target.open_read(manifest_key) as stream:
        data = stream.read()
    try:
        with target.open_read(signature_key(manifest_key)) as stream:
            document = stream.read()
    except NotFound:
        raise SignatureProblem(f"no signature at {signature_key(manifest_key)}") from None
    return keyring.verify(data, document)


def check_signatures(context, rows, *, flagged: set[tuple[str, str]]) -> list[tuple[object, str, str | None]]:
    """For each archived manifest copy in `rows` (not `flagged` missing by the copy checks; an
    altered one is checked: its signature says whether the bytes are the signed ones):
    (row, id of the key that signed it, None) or (row, problem state, detail).
    Nothing to check when no key is configured and the ledger recorded no signature."""
    keyring = Keyring.from_config(context.config.signing)
    recorded = context.ledger.signatures()
    results = []
    for row in rows:
        if row.kind != keys.MANIFEST or row.state != "archived" or (row.recording_id, row.target) in flagged:
            continue
        target = context.targets.get(row.target)
        signed = recorded.get((row.recording_id, row.target))
        if target is None or not (keyring.configured or signed):
            continue
        if not keyring.configured:
            results.append((row, "unchecked", f"signed by key {signed.key_id}, but no [signing] key or "
                            "public_keys is configured to check it with"))
            continue
        try:
            kid = check_signature(keyring, target, row.key)
        except SignatureProblem as exc:
            results.append((row, "bad-signature", str(exc)))
            continue
        except StorageError as exc:
            results.append((row, "unchecked", f"could not read the manifest or its signature: {exc}"))
            continue
        if signed is not None and signed.key_id != kid:
            detail = f"signed by key {kid}, but the ledger recorded key {signed.key_id}"
            results.append((row, "bad-signature", detail))
        else:
            results.append((row, kid, None))
    return results
