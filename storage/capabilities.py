"""What a storage backend can do, declared once per backend (never discovered by trial): the
digests it computes itself, the write-once protection it enforces, how it keeps a write
create-only, and whether its uploads leave visible temporaries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    # Whole-file digests (names as in Checksums: sha256, md5, crc32c) that stat reports from the
    # backend's own computation over the stored bytes: the independent evidence a copy is
    # verified by. After a multipart (chunked, resumable) upload only `multipart_digests` are
    # whole-file digests: an S3 checksum of part checksums, or an ETag ending in "-N" (the MD5
    # of the parts' MD5s), describes no file and is never reported as one.
    digests: frozenset[str] = frozenset()
    multipart_digests: frozenset[str] = frozenset()
    # The file's MD5 must be computed for this backend (the pipeline skips MD5, the slowest
    # digest, unless a configured target needs it): the backend checks it on the way in, or its
    # MD5 is the only digest it reports.
    uses_md5: bool = False

    # Write-once protection it can enforce: the retention_mode values, what they are (for the
    # error message), whether they last retention_days, and whether legal_hold is available.
    retention_modes: tuple[str, ...] = ()
    retention_note: str = ""
    retention_timed: bool = True
    legal_hold: bool = False
    # An object stored with those settings can still be removed by the tool (a chmod can be
    # undone; Object Lock, immutability policies and holds cannot). When not, the preflight
    # probe proves write permission without storing anything.
    retained_objects_removable: bool = False

    # The write itself refuses an existing key (If-None-Match, ifGenerationMatch=0, link(2),
    # SFTP RENAME). Without it, create-only rests on the look before each put alone: another
    # writer's object created between that look and the write would be replaced.
    conditional_create: bool = True
    # Uploads go through temporary names a reader can see (local, sftp): a killed run leaves
    # them behind, and `sweep_partials` removes them.
    temporaries_visible: bool = False
    # `stat` re-computes its digests from the stored bytes (a folder: nothing keeps a digest
    # computed at write time), so it reads every byte anyway: a scrub re-hashes these deep.
    stat_rereads: bool = False
    # `put_growing` uploads while the download runs (storage/stream.py) instead of waiting for
    # the whole file: S3 parts, Azure blocks, GCS resumable chunks, a sequential temporary.
    overlapped_upload: bool = False
    # What `stat` reports of a copy `put_growing` uploaded that way: its whole-file digests
    # (None: as `multipart_digests`), and whether the file's SHA-256 is in its metadata (S3
    # fixes metadata before the first part, when the SHA-256 is not known yet).
    overlapped_digests: frozenset[str] | None = None
    overlapped_sha256: bool = True

    def digests_after_overlap(self) -> frozenset[str]:
        """The whole-file digests `stat` reports after an overlapped upload."""
        return self.multipart_digests if self.overlapped_digests is None else self.overlapped_digests


def folder_capabilities(digest: str, how_read_only: str) -> Capabilities:
    """A folder (on this machine, or on an SSH server): every file is written to a visible
    temporary name beside its final one and then linked or renamed there, which refuses an
    existing name; READ_ONLY is a chmod the folder's owner can undo (so the tool can still remove
    a probe file). `digest` is re-computed from the stored bytes at each stat."""
    return Capabilities(
        digests=frozenset({digest}), multipart_digests=frozenset({digest}),
        retention_modes=("READ_ONLY",),
        retention_note=f" ({how_read_only}; weaker: the owner can undo it)",
        retention_timed=False,
        retained_objects_removable=True,
        conditional_create=True,
        temporaries_visible=True,
        stat_rereads=True,
        overlapped_upload=True,  # a sequential write of the temporary as the bytes arrive
    )
