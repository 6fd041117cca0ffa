"""Overlapped upload (issue 11, storage/stream.py): `put_growing` against every rig whose target
declares `overlapped_upload`, each on its real server. The source is tests/storage/growing.py:
the test releases its bytes, holds back the last one until it calls `finish` (as the pipeline
holds it until the download is verified), or makes it fail."""

from __future__ import annotations

import concurrent.futures
import os

import pytest

from pipeline.archive.verification import verify_copy
from storage import NotFound, ObjectConflict, PermanentStorageError, settings_model
from storage.stream import SourceFailed
from tests.storage import conftest as storage_conftest
from tests.storage.files import make_target, read_back, someone_writes_after_the_check, write
from tests.storage.growing import WAIT, GrowingSource

MiB = 1 << 20
SIZE = 12 * MiB  # above every rig's small_parts threshold: several parts, blocks or chunks

OVERLAPPING = [server for server, rig in storage_conftest.RIGS.items()
               if settings_model(rig.type).capabilities.overlapped_upload]
overlap_rig = storage_conftest._rig_fixture("overlap_rig", OVERLAPPING)


class Uploads:
    """Runs put_growing beside the test, which plays the download. A test that stops early
    fails every source it left unfinished, so no upload thread waits for bytes forever."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor):
        self._pool = pool
        self._sources: list[GrowingSource] = []

    def start(self, target, source: GrowingSource, key: str) -> concurrent.futures.Future:
        self._sources.append(source)
        return self._pool.submit(target.put_growing, source, key)

    def abandon(self) -> None:
        for source in self._sources:
            if not source.ended:
                source.fail("the test ended")


@pytest.fixture
def uploads():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        running = Uploads(pool)
        try:
            yield running
        finally:
            running.abandon()


def test_every_cloud_backend_overlaps():
    """S3 (aws), Azure and GCS take overlapped uploads; an S3-compatible provider whose full-object
    checksums are not documented does not (put_growing waits for the download there)."""
    types = {storage_conftest.RIGS[server].type for server in OVERLAPPING}
    assert {"aws", "azure", "gcs"} <= types
    assert not settings_model("minio").capabilities.overlapped_upload


def test_large_file_arrives_whole_and_passes_the_pipelines_verification(overlap_rig, prefix, tmp_path,
                                                                        uploads):
    """A file of several parts, released at a steady pace by a feeding thread, is stored whole:
    stat reports its size, the SHA-256 in the metadata where the backend declares it can carry
    one (else none), exactly the whole-file digests the backend declares for an overlapped copy,
    each the file's own, and the pipeline's verify_copy accepts it on more than its size."""
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        running = uploads.start(target, source, "whole/video.mp4")
        source.feed(rate=64 * MiB)
        stored = running.result(timeout=WAIT)
        local = source.result()
        stat = target.stat("whole/video.mp4")
        caps = target.capabilities
        assert (stored.size, stat.size) == (SIZE, SIZE)
        assert stat.sha256 == (local.checksums.sha256 if caps.overlapped_sha256 else None)
        assert set(stat.native) == caps.digests_after_overlap()
        assert all(local.checksums.as_dict()[name] == value for name, value in stat.native.items())
        compared = verify_copy(local, stat, target.name, protection=target.settings)
        assert compared != "size", compared
        assert read_back(target, "whole/video.mp4") == source.path.read_bytes()


def test_upload_starts_before_the_download_ends_and_commits_only_after(overlap_rig, prefix, tmp_path, uploads):
    """The upload reads the file while it arrives: with everything but the last byte released
    and the download not yet verified, it has read all of that, the backend holds its parts
    (an open multipart upload at S3, staged blocks at Azure) and nothing is visible at the key.
    Only `finish` lets it commit."""
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        running = uploads.start(target, source, "held/video.mp4")
        source.deliver(SIZE - 1)
        source.wait_read(SIZE - 1, running)
        full = target.full_key("held/video.mp4")
        _parts_are_held(overlap_rig, full)
        with pytest.raises(NotFound):
            target.stat("held/video.mp4")
        assert not running.done()
        local = source.finish()
        stored = running.result(timeout=WAIT)
    assert source.read_before_finish == SIZE - 1
    assert 0 < source.largest_request <= _part_size(overlap_rig)  # a part at a time: memory flat in the size
    assert stored.size == SIZE
    assert overlap_rig.raw_read(full) == local.path.read_bytes()


@pytest.mark.parametrize("where", ["end", "midway"])
def test_failed_download_leaves_nothing(overlap_rig, prefix, tmp_path, uploads, where):
    """The download fails after its last byte arrived (its size or SHA-256 does not match) or
    halfway: put_growing raises that very SourceFailed, unchanged, and nothing is left at the
    server: no object, no open multipart upload at S3, no committed blob at Azure."""
    source = GrowingSource.of(tmp_path, SIZE)
    released = SIZE - 1 if where == "end" else SIZE // 2
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        running = uploads.start(target, source, "failed/video.mp4")
        source.deliver(released)
        source.wait_read(released if where == "end" else 4 * MiB, running)
        failure = source.fail("the download's SHA-256 does not match the one RealtimeKit announced")
        with pytest.raises(SourceFailed) as info:
            running.result(timeout=WAIT)
        assert info.value is failure
        with pytest.raises(NotFound):
            target.stat("failed/video.mp4")
        full = target.full_key("failed/video.mp4")
    assert overlap_rig.list_keys(prefix) == []  # at S3: objects and open multipart uploads
    _nothing_committed(overlap_rig, full)


def test_bytes_changed_after_the_download_was_verified_are_never_committed(overlap_rig, prefix, tmp_path,
                                                                           uploads):
    """The spool file changes after the upload read part of it and before the download's
    digests were computed (a damaged or rewritten spool): the bytes the upload read are not the
    verified file. The upload checks them against its size and CRC32C before it reads the last
    bytes, so it stops with a permanent error naming the corrupted source, and nothing is
    committed or left open."""
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        running = uploads.start(target, source, "changed/video.mp4")
        source.deliver(SIZE - 1)
        source.wait_read(SIZE - 1, running)
        with open(source.path, "r+b") as spool:
            first = spool.read(1)
            spool.seek(0)
            spool.write(bytes([first[0] ^ 0xFF]))  # what was already read is no longer the file
        source.finish()
        with pytest.raises(PermanentStorageError) as info:
            running.result(timeout=WAIT)
        assert "changed after it was verified" in str(info.value)
        with pytest.raises(NotFound):
            target.stat("changed/video.mp4")
        full = target.full_key("changed/video.mp4")
    assert overlap_rig.list_keys(prefix) == []
    _nothing_committed(overlap_rig, full)


def test_an_identical_object_already_there_is_a_no_op(overlap_rig, prefix, tmp_path, uploads):
    """An object already under the key: put_growing waits for the download and does what put
    does. The same bytes: nothing is written, the object is returned as it is."""
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        running = uploads.start(target, source, "again/video.mp4")
        source.feed(rate=256 * MiB)
        first = running.result(timeout=WAIT)
        again = GrowingSource(source.path)
        second = uploads.start(target, again, "again/video.mp4")
        again.deliver(SIZE - 1)
        again.finish()
        assert second.result(timeout=WAIT).version == first.version
        assert again.most_read == 0  # it waited for the verified file: it never read the growing one
        assert len(overlap_rig.list_keys(prefix)) == 1


def test_a_different_object_already_there_is_refused(overlap_rig, prefix, tmp_path, uploads):
    """A different object already under the key: ObjectConflict once the download is verified,
    the other object intact, nothing of ours left."""
    theirs = os.urandom(30_000)
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        full = target.full_key("clash/video.mp4")
        overlap_rig.plant(full, theirs)
        running = uploads.start(target, source, "clash/video.mp4")
        source.deliver(SIZE - 1)
        source.finish()
        with pytest.raises(ObjectConflict):
            running.result(timeout=WAIT)
    assert overlap_rig.raw_read(full) == theirs
    assert len(overlap_rig.list_keys(prefix)) == 1


RACING = [server for server in OVERLAPPING if storage_conftest.RIGS[server].create_only_in_parts]


@pytest.mark.parametrize("overlap_rig", RACING, indirect=True)
def test_object_created_by_someone_else_during_the_upload_survives(overlap_rig, prefix, tmp_path, uploads,
                                                                     monkeypatch):
    """Another writer creates the object after put_growing looked (nothing there) and while
    the parts go up: the create-only commit (If-None-Match on CompleteMultipartUpload, on the
    block list) refuses ours with ObjectConflict, the other object stays byte for byte, and
    nothing of ours is left (no open multipart upload). Servers that enforce it on parts only."""
    rig = overlap_rig
    theirs = os.urandom(30_000)
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(rig, prefix, **rig.small_parts()) as target:
        full = target.full_key("race/video.mp4")
        checks = someone_writes_after_the_check(monkeypatch, rig, target, full, theirs)
        running = uploads.start(target, source, "race/video.mp4")
        source.deliver(SIZE - 1)
        source.wait_read(SIZE - 1, running)
        source.finish()
        with pytest.raises(ObjectConflict):
            running.result(timeout=WAIT)
    assert checks == ["race/video.mp4"]
    assert rig.raw_read(full) == theirs
    assert rig.list_keys(prefix) == [full]


def test_a_small_file_waits_and_goes_in_one_request(overlap_rig, prefix, tmp_path, uploads):
    """Below the part size nothing is gained by overlapping: it waits for the verified file and
    is put as put puts it, SHA-256 metadata included."""
    source = GrowingSource(write(tmp_path, "small", os.urandom(100_000)).path)
    with make_target(overlap_rig, prefix, **overlap_rig.small_parts()) as target:
        running = uploads.start(target, source, "small/video.mp4")
        local = source.finish()
        stored = running.result(timeout=WAIT)
    assert (stored.size, stored.sha256) == (local.size, local.checksums.sha256)


def test_a_provider_without_full_object_checksums_waits_for_the_download(rig_minio, prefix, tmp_path, uploads):
    """An S3-compatible provider that does not declare overlapped uploads (MinIO: full-object
    checksums not honoured) gets the file only once the download is verified, as put stores
    it: the upload reads nothing before, and the copy carries its SHA-256 metadata."""
    source = GrowingSource.of(tmp_path, SIZE)
    with make_target(rig_minio, prefix, **rig_minio.small_parts()) as target:
        assert not target.capabilities.overlapped_upload
        running = uploads.start(target, source, "waits/video.mp4")
        source.deliver(SIZE - 1)
        local = source.finish()
        stored = running.result(timeout=WAIT)
    assert source.most_read == 0  # put read the verified file, never the growing one
    assert (stored.size, stored.sha256) == (SIZE, local.checksums.sha256)


# --------------------------------------------------------------------------- write-once


def test_protection_is_asked_for_and_checked(overlap_rig, prefix, tmp_path, uploads):
    """Write-once settings hold with overlapped uploads as with put: the upload asks for them
    (at S3 the Object Lock headers go with CreateMultipartUpload, as S3 takes them) and the
    stored copy is checked for them. None of the test servers applies them to a multipart, block
    or resumable upload (moto keeps Object Lock for PutObject only; Azurite and the GCS
    emulators keep no immutability policy or hold), so there the check must refuse the copy,
    naming what is missing, and Azure and GCS remove it: never reported as protected. A folder
    (local, SFTP) applies its READ_ONLY chmod after the overlapped write, and reports it."""
    rig = overlap_rig
    source = GrowingSource.of(tmp_path, SIZE)
    overrides = {**rig.small_parts(), **_protection_settings(rig)}
    with make_target(rig, prefix, **overrides) as target:
        if "READ_ONLY" in target.capabilities.retention_modes:  # a folder: the chmod is applied, and reported
            running = uploads.start(target, source, "locked/video.mp4")
            source.feed(rate=256 * MiB)
            stored = running.result(timeout=WAIT)
            assert stored.retention is not None and stored.retention.mode == "READ_ONLY"
            assert target.stat("locked/video.mp4").retention.mode == "READ_ONLY"
            return
        sent = _record_object_lock_headers(target) if rig.type == "aws" else None
        running = uploads.start(target, source, "locked/video.mp4")
        source.feed(rate=256 * MiB)
        with pytest.raises(PermanentStorageError) as info:
            running.result(timeout=WAIT)
        if rig.type == "aws":
            assert "WITHOUT the requested Object Lock protection" in str(info.value)
            assert sent == [("COMPLIANCE", "ON")]
        else:
            with pytest.raises(NotFound):
                target.stat("locked/video.mp4")


# --------------------------------------------------------------------------- per backend


def _protection_settings(rig) -> dict:
    if rig.type == "aws":
        rig.server.ensure_bucket("rtk-overlap-object-lock", object_lock=True)
        return {"bucket": "rtk-overlap-object-lock", "retention_mode": "COMPLIANCE", "retention_days": 1,
                "legal_hold": True}
    if rig.type in ("local", "sftp"):  # folders offer READ_ONLY only (a chmod), which they do apply
        return {"retention_mode": "READ_ONLY"}
    return {"legal_hold": True}


def _record_object_lock_headers(target) -> list[tuple[str, str]]:
    """What the target's S3 client sends as Object Lock mode and legal hold with each
    CreateMultipartUpload."""
    sent = []

    def record(params, **_kwargs):
        sent.append((params.get("ObjectLockMode"), params.get("ObjectLockLegalHoldStatus")))

    target._s3().meta.events.register("provide-client-params.s3.CreateMultipartUpload", record)
    return sent


def _part_size(rig) -> int:
    """The most one read may ask for: the rig's part, block or chunk size (half the file where
    the backend has none: never the whole file at once)."""
    sizes = [value for name, value in rig.small_parts().items() if name in ("part_size", "block_size", "chunk_size")]
    return max(sizes) if sizes else SIZE // 2


def _parts_are_held(rig, full_key: str) -> None:
    """The backend holds uploaded parts for `full_key` that are not an object yet."""
    if rig.type == "aws":
        uploads = rig.s3.list_multipart_uploads(Bucket=rig.bucket, Prefix=full_key).get("Uploads", [])
        assert [u["Key"] for u in uploads] == [full_key]
        _eventually(lambda: rig.s3.list_parts(Bucket=rig.bucket, Key=full_key,
                                              UploadId=uploads[0]["UploadId"]).get("Parts"), "a part uploaded")
    elif rig.type == "azure":
        blob = rig.container.get_blob_client(full_key)
        _eventually(lambda: blob.get_block_list("uncommitted")[1], "a block staged")


def _nothing_committed(rig, full_key: str) -> None:
    if rig.type == "azure":
        from azure.core.exceptions import ResourceNotFoundError

        with pytest.raises(ResourceNotFoundError):
            rig.container.get_blob_client(full_key).get_blob_properties()


def _eventually(check, what: str) -> None:
    """Poll `check` until it is truthy (an upload in another thread gets there; never a timing
    assertion: WAIT is far beyond any real delay)."""
    import time

    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never saw {what} within {WAIT:.0f} s"
        time.sleep(0.05)
