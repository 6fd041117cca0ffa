"""One conformance suite, run against every registered storage type on its real server."""

from __future__ import annotations

import hashlib
import os

import pytest

from storage import (
    LocalFile,
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    StorageError,
    build_target,
    settings_model,
    target_types,
)
from storage.target import PROBE_PREFIX
from tests.storage import conftest as storage_conftest
from tests.storage.files import (
    FailingFile,
    local_file,
    make_target,
    read_back,
    someone_writes_after_the_check,
    write,
)


def test_every_registered_type_has_a_rig():
    assert storage_conftest.MISSING_RIGS == [], "registered types without a conformance rig"
    assert set(target_types()) >= {"local", "aws", "digitalocean", "r2", "b2", "wasabi", "minio",
                                   "azure", "gcs", "sftp"}


def test_round_trip_keeps_size_and_sha256(rig, prefix, tmp_path):
    data = os.urandom(300_000)
    src = write(tmp_path, "a.mp4", data)
    with make_target(rig, prefix) as target:
        stored = target.put(src, "rec-1/video.mp4")
        assert stored.size == len(data)
        assert stored.sha256 == src.checksums.sha256
        again = target.stat("rec-1/video.mp4")
        assert (again.size, again.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        # Whatever the backend computed itself must agree with the file's own digests.
        for name, value in again.native.items():
            assert value == src.checksums.as_dict()[name], name
        assert read_back(target, "rec-1/video.mp4") == data
        assert again.key.endswith("rec-1/video.mp4")
        assert rig.raw_read(again.key) == data


def test_stat_reports_exactly_the_digests_the_backend_declares(rig, prefix, tmp_path):
    """Capabilities are declared, never discovered by trial: after a single-part put, stat
    reports exactly the whole-file digests the backend's Capabilities name (no more: nothing the
    pipeline does not expect; no fewer: no evidence silently missing), each the file's own."""
    src = write(tmp_path, "d", os.urandom(100_000))
    with make_target(rig, prefix) as target:
        target.put(src, "digests/video.mp4")
        native = target.stat("digests/video.mp4").native
        assert set(native) == target.capabilities.digests
    assert all(src.checksums.as_dict()[name] == value for name, value in native.items())


def test_missing_key_is_not_found(rig, prefix):
    with make_target(rig, prefix) as target:
        with pytest.raises(NotFound) as info:
            target.stat("no/such/key.mp4")
        assert isinstance(info.value, FileNotFoundError)


def test_zero_length_file(rig, prefix, tmp_path):
    src = write(tmp_path, "empty", b"")
    with make_target(rig, prefix) as target:
        stored = target.put(src, "empty/video.mp4")
        assert stored.size == 0
        assert target.stat("empty/video.mp4").sha256 == hashlib.sha256(b"").hexdigest()


def test_unicode_and_spaces_in_keys(rig, prefix, tmp_path):
    data = b"unicode" * 1000
    src = write(tmp_path, "u", data)
    key = "réunion équipe/ファイル 1 (final).mp4"
    with make_target(rig, prefix) as target:
        target.put(src, key)
        assert target.stat(key).size == len(data)
        assert read_back(target, key) == data


def test_large_file_through_multipart(rig, prefix, tmp_path):
    path = tmp_path / "large.bin"
    with open(path, "wb") as fh:
        for _ in range(12):
            fh.write(os.urandom(1 << 20))
    src = local_file(path)
    with make_target(rig, prefix, **rig.small_parts()) as target:
        stored = target.put(src, "large/video.mp4")
        assert stored.size == 12 << 20
        stat = target.stat("large/video.mp4")
        assert stat.sha256 == src.checksums.sha256
        # Only what stays a whole-file digest after a multipart upload is reported (declared).
        assert set(stat.native) == target.capabilities.multipart_digests
        assert hashlib.sha256(read_back(target, "large/video.mp4")).hexdigest() == src.checksums.sha256


def test_identical_reput_is_a_no_op(rig, prefix, tmp_path):
    src = write(tmp_path, "same", os.urandom(50_000))
    with make_target(rig, prefix) as target:
        first = target.put(src, "same/video.mp4")
        second = target.put(src, "same/video.mp4")
        assert second.size == first.size and second.sha256 == first.sha256
        assert second.version == first.version
        keys = rig.list_keys(prefix)
        assert len(keys) == 1 and keys[0].endswith("same/video.mp4"), keys


def test_different_content_is_refused(rig, prefix, tmp_path):
    original = os.urandom(40_000)
    with make_target(rig, prefix) as target:
        target.put(write(tmp_path, "one", original), "clash/video.mp4")
        with pytest.raises(ObjectConflict) as info:
            target.put(write(tmp_path, "two", os.urandom(40_000)), "clash/video.mp4")
        assert not info.value.retryable
        assert "clash/video.mp4" in str(info.value)
        assert read_back(target, "clash/video.mp4") == original


def test_source_failing_midway_leaves_no_object(rig, prefix, tmp_path):
    good = write(tmp_path, "src", os.urandom(12 << 20))
    broken = FailingFile(path=good.path, size=good.size, checksums=good.checksums)
    with make_target(rig, prefix, **rig.small_parts()) as target:
        with pytest.raises(StorageError):
            target.put(broken, "broken/video.mp4")
        assert rig.list_keys(prefix) == []
        with pytest.raises(NotFound):
            target.stat("broken/video.mp4")


def test_wrong_checksum_is_refused_by_the_backend_or_caught(rig, prefix, tmp_path):
    """README "Nothing is marked archived before it is verified": declared digests that do not
    match the bytes never leave an object that claims the wrong SHA-256. Per server (see
    Rig.refuses_lying_digests): refused on the way in, or stored with a stat whose own digest is
    of the real bytes (and so contradicts the claim, which the pipeline's comparison then
    refuses). A provider that reports no digest of its own (declared so) is verified by size
    and the stored SHA-256 alone: the README says so, and this test holds it to that."""
    data = os.urandom(70_000)
    good = write(tmp_path, "bad", data)
    lying = LocalFile(path=good.path, size=good.size, checksums=write(tmp_path, "other", os.urandom(70_000)).checksums)
    with make_target(rig, prefix) as target:
        if rig.refuses_lying_digests:
            with pytest.raises(StorageError):
                target.put(lying, "lying/video.mp4")
            assert rig.list_keys(prefix) == []
            return
        stored = target.put(lying, "lying/video.mp4")
        assert stored.size == len(data)
        native = target.stat("lying/video.mp4").native
        if not target.capabilities.digests:
            assert native == {}
            return
        real = local_file(good.path).checksums.as_dict()
        assert native and all(real[name] == value for name, value in native.items())
        assert any(lying.checksums.as_dict()[name] != value for name, value in native.items())


def test_wrong_credentials_are_permanent_and_secret_free(credentialed_rig, prefix, tmp_path):
    """README "Secrets stay secret": a server refusing the credentials gives a permanent error
    naming the target and quoting none of the secrets."""
    rig = credentialed_rig
    settings, secrets = rig.bad_credentials("conformance", prefix)
    src = write(tmp_path, "c", b"credentials")
    target = build_target(settings_model(settings["type"]).model_validate(settings))
    with pytest.raises(PermanentStorageError) as info:
        target.put(src, "creds/video.mp4")
    target.close()
    message = str(info.value)
    assert "conformance" in message  # names the target
    for secret in secrets:
        assert secret not in message
        assert secret not in repr(info.value)


def test_a_local_folder_has_no_credentials_to_refuse(rig_local):
    """Why `local` is not in the credentials cases: its settings hold no secret at all."""
    from pydantic import SecretStr

    model = settings_model("local")
    secret_fields = [name for name, field in model.model_fields.items() if SecretStr in
                     (getattr(field.annotation, "__args__", ()) or (field.annotation,))]
    assert secret_fields == []
    assert rig_local.bad_credentials("x", "y") is None


# --------------------------------------------------------------------------- create-only


# Local and sftp have one code path for every size; this fake-gcs-server build drops the
# precondition of resumable uploads (fixed upstream later), so its single-request case decides GCS.
# S3-compatible providers without conditional writes have no race protection to test (declared:
# Capabilities.conditional_create; test_s3_specific checks the probe says so).
RIGS = storage_conftest.RIGS
RACES = [(s, "single") for s, r in RIGS.items() if r.enforces_create_only] + [
    (s, "parts") for s, r in RIGS.items() if r.enforces_create_only and r.create_only_in_parts]


@pytest.mark.parametrize(("create_only_rig", "size"), RACES, indirect=["create_only_rig"])
def test_object_created_by_someone_else_between_check_and_put_survives(create_only_rig, prefix, tmp_path,
                                                                       monkeypatch, size):
    """README "An object that already sits under a key with different content is never
    overwritten", at the moment it matters: another writer creates the object after put's
    check answered "not found" and before the upload. The backend's own create-only write must
    refuse it (S3 If-None-Match on PutObject / CompleteMultipartUpload, Azure If-None-Match on
    Put Blob / the block list, GCS ifGenerationMatch=0, SFTP RENAME, local link(2)):
    ObjectConflict, the other object intact byte for byte, nothing of ours left."""
    rig = create_only_rig
    overrides = rig.small_parts() if size == "parts" else {}
    ours = write(tmp_path, "ours", os.urandom((12 << 20) if size == "parts" else 40_000))
    theirs = os.urandom(30_000)
    key = "race/video.mp4"
    with make_target(rig, prefix, **overrides) as target:
        full = target.full_key(key)
        checks = someone_writes_after_the_check(monkeypatch, rig, target, full, theirs)
        with pytest.raises(ObjectConflict) as info:
            target.put(ours, key)
    assert checks == [key], "the race was not set up: put did not check first"
    assert not info.value.retryable
    assert rig.raw_read(full) == theirs
    assert rig.list_keys(prefix) == [full] if rig.type != "local" else ["race/video.mp4"]


# --------------------------------------------------------------------------- keys

HOSTILE_KEYS = ["../x", "/rtk-archive-hostile-abs", "a/../../b", "a\\b", "a\x00b", ".", "", "..",
                "a//b", "./a", "a/.", "a/.."]


def test_a_key_never_leaves_the_target_prefix(rig, prefix, tmp_path):
    """README "a key never leaves the target's prefix", at the adapter itself (the last line of
    defence, whatever the pipeline builds): put, stat and open_read refuse every hostile key
    with a permanent error that says so (not "not found"), and nothing is written anywhere at
    the server (the whole bucket / container / home / the folder above the target's)."""
    src = write(tmp_path, "h", b"hostile")
    before = rig.everything()
    with make_target(rig, prefix) as target:
        for key in HOSTILE_KEYS:
            attempts = {"put": lambda: target.put(src, key), "stat": lambda: target.stat(key),
                        "open_read": lambda: read_back(target, key)}
            for name, attempt in attempts.items():
                with pytest.raises(PermanentStorageError) as info:
                    attempt()
                assert not isinstance(info.value, NotFound), (name, key)
                assert "unsafe object key" in str(info.value) or "outside" in str(info.value), (name, key)
                assert not info.value.retryable
    assert rig.everything() == before
    assert not os.path.lexists("/rtk-archive-hostile-abs")


# --------------------------------------------------------------------------- probe


def test_probe_of_a_healthy_target_passes_and_leaves_no_object(rig, prefix):
    """The preflight probe (README "Preflight"): access, retention and a create-only write,
    all ok on a working target, and the probe object is removed again."""
    before = rig.everything()
    with make_target(rig, prefix) as target:
        results = target.probe()
    assert [r.check for r in results][:3] == ["access", "retention", "write"]
    assert [r.status for r in results] == ["ok"] * len(results), results
    assert "created (create-only), read back and removed" in results[2].detail
    assert rig.list_keys(prefix) == []
    # Neither a probe object nor the probe's folder stays (the target's own folder may: a
    # first write creates it anyway).
    new = rig.everything() - before
    assert not [name for name in new if PROBE_PREFIX in name], new
    if rig.type == "local":
        assert new == set()  # the folders the probe had to create are removed as well


def test_probe_with_wrong_credentials_fails_at_access_and_stops_there(credentialed_rig, prefix):
    """A target whose credentials are refused fails its first check, once, with a permanent
    reason that names no secret; nothing else is tried."""
    settings, secrets = credentialed_rig.bad_credentials("conformance", prefix)
    with build_target(settings_model(settings["type"]).model_validate(settings)) as target:
        results = target.probe()
    assert [(r.check, r.status, r.retryable) for r in results] == [("access", "fail", False)], results
    for secret in secrets:
        assert secret not in results[0].detail
