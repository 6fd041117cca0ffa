"""What only the S3 adapter (aws, digitalocean) does, beyond the conformance suite: settings,
credentials, Object Lock, storage class, create-only writes, multipart clean-up, errors."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from storage import (
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
    build_target,
)
from pipeline.config import ArchiveConfig
from storage.s3 import adapter as s3_module
from storage.s3.adapter import S3Target
from storage.s3.settings import SETTINGS_MODELS
from tests.servers.moto import moto_server  # noqa: F401  (the session fixture)
from tests.servers.process import free_port
from tests.storage.files import FailingFile, local_file, write
from tests.storage.growing import GrowingSource

MiB = 1 << 20
SMALL_PARTS = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB}
S3Settings, SpacesSettings = SETTINGS_MODELS["aws"], SETTINGS_MODELS["digitalocean"]
BUCKET = "rtk-s3-specific"
LOCK_BUCKET = "rtk-s3-object-lock"


@pytest.fixture
def server(moto_server):  # noqa: F811
    moto_server.ensure_bucket(BUCKET)
    moto_server.ensure_bucket(LOCK_BUCKET, object_lock=True)
    return moto_server


@pytest.fixture
def prefix() -> str:
    return f"specific/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3(server):
    return server.client()


def aws_target(server, prefix: str, **overrides) -> S3Target:
    raw = {"name": "archive-s3", "bucket": BUCKET, "endpoint": server.endpoint, "path": prefix,
           "access_key": server.access_key, "secret": server.secret, **overrides}
    return build_target(S3Settings.model_validate(raw))


def big_file(tmp_path: Path, size: int = 11 * MiB):
    return write(tmp_path, f"big-{uuid.uuid4().hex[:6]}", os.urandom(size))


# --------------------------------------------------------------------------- settings


def test_spaces_endpoint_is_derived_from_the_region_without_network():
    settings = SpacesSettings(name="do", bucket="space", region="NYC3", path="/recordings/")
    assert settings.region == "nyc3"
    assert settings.service_endpoint() == "https://nyc3.digitaloceanspaces.com"
    target = build_target(settings)
    # Building a client resolves the URL but sends nothing.
    assert target._s3().meta.endpoint_url == "https://nyc3.digitaloceanspaces.com"
    assert target.describe() == "do://space/recordings @ nyc3"
    target.close()


def test_spaces_endpoint_override_is_honoured():
    settings = SpacesSettings(name="do", bucket="space", region="sgp1",
                              endpoint="https://sgp1.example.test/")
    target = build_target(settings)
    assert target._s3().meta.endpoint_url == "https://sgp1.example.test"
    target.close()


@pytest.mark.parametrize("region", [None, "", "nyc3.evil.test/x"])
def test_spaces_needs_a_plain_region(region):
    raw = {"name": "do", "bucket": "space"}
    if region is not None:
        raw["region"] = region
    with pytest.raises(ValidationError) as info:
        SpacesSettings.model_validate(raw)
    assert "region" in str(info.value)


def test_aws_defaults():
    """Proves the defaults: one PutObject below AWS's 100 MB multipart guidance, 16 MiB parts
    (AWS's 8-16 MB), 8 parts at once."""
    settings = S3Settings(name="s3", bucket="bkt", path="a/b/")
    assert settings.region == "us-east-1"
    assert (settings.multipart_threshold, settings.part_size, settings.max_concurrency) == (100 * MiB, 16 * MiB, 8)
    assert S3Target(settings).describe() == "s3://bkt/a/b"


@pytest.mark.parametrize("given, missing", [({"access_key": "AKIAONLYKEY"}, "secret"),
                                            ({"secret": "only-the-secret-value"}, "access_key")])
def test_half_a_key_pair_is_refused_and_not_echoed(given, missing):
    with pytest.raises(ValidationError) as info:
        S3Settings.model_validate({"name": "s3", "bucket": "bkt", **given})
    message = str(info.value)
    assert f"{missing} is missing" in message
    assert all(value not in message for value in given.values())


def test_secrets_never_print():
    settings = S3Settings(name="s3", bucket="bkt", access_key="AKIAPRINTME", secret="do-not-print-me")
    target = S3Target(settings)
    for text in (repr(settings), str(settings), target.describe()):
        assert "AKIAPRINTME" not in text and "do-not-print-me" not in text
    assert settings.secret_values() == ["AKIAPRINTME", "do-not-print-me"]


@pytest.mark.parametrize("fields, words", [
    ({"retention_mode": "READ_ONLY", "retention_days": 3}, "GOVERNANCE or COMPLIANCE"),
    ({"retention_mode": "LOCKED", "retention_days": 3}, "GOVERNANCE or COMPLIANCE"),
    ({"retention_mode": "COMPLIANCE"}, "needs retention_days"),
    ({"retention_days": 3}, "needs retention_mode"),
    ({"part_size": 4 * MiB}, "part_size"),
    ({"storage_class": "standard ia"}, "storage_class"),
    ({"endpoint": "ftp://host"}, "endpoint"),
    ({"endpoint": "https://user:pw@host"}, "must not contain credentials"),
])
def test_invalid_settings_are_refused(fields, words):
    with pytest.raises(ValidationError) as info:
        S3Settings.model_validate({"name": "s3", "bucket": "bkt", **fields})
    assert words in str(info.value)


# --------------------------------------------------------------------------- credentials


def test_default_credential_chain_is_used_when_no_keys_are_set(server, prefix, tmp_path, monkeypatch):
    _isolate_credential_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret)
    src = write(tmp_path, "chain", b"from the environment")
    with server.auth_enforced():  # moto now refuses any key but the real one
        with aws_target(server, prefix, access_key=None, secret=None) as target:
            assert target.put(src, "chain/video.mp4").sha256 == src.checksums.sha256
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
        with aws_target(server, prefix, access_key=None, secret=None) as target:
            with pytest.raises(PermanentStorageError) as info:
                target.put(src, "chain/other.mp4")
    assert "access_key and secret" in str(info.value)


def test_no_credentials_anywhere_is_permanent_and_explained(server, prefix, tmp_path, monkeypatch):
    _isolate_credential_chain(monkeypatch, tmp_path)
    with aws_target(server, prefix, access_key=None, secret=None) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.stat("any.mp4")
    assert "no AWS credentials found" in str(info.value)
    assert "archive-s3" in str(info.value)


def _isolate_credential_chain(monkeypatch, tmp_path: Path) -> None:
    """Nothing from this machine's AWS set-up may leak into the credential chain."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --------------------------------------------------------------------------- what is stored


def test_storage_class_is_sent(server, s3, prefix, tmp_path):
    with aws_target(server, prefix, storage_class="standard_ia") as target:
        stored = target.put(write(tmp_path, "sc", b"cold"), "sc/video.mp4")
    assert s3.head_object(Bucket=BUCKET, Key=stored.key)["StorageClass"] == "STANDARD_IA"


def test_single_part_reports_native_sha256_and_md5(server, s3, prefix, tmp_path):
    data = os.urandom(100_000)
    src = write(tmp_path, "one", data)
    with aws_target(server, prefix) as target:
        stored = target.put(src, "one/video.mp4")
    assert stored.native == {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    assert stored.uri == f"s3://{BUCKET}/{prefix}/one/video.mp4"
    # The metadata name travels with a hyphen (headers with "_" get dropped by proxies).
    assert s3.head_object(Bucket=BUCKET, Key=stored.key)["Metadata"] == {"rtk-sha256": src.checksums.sha256}


def test_multipart_omits_checksums_that_are_not_the_files(server, prefix, tmp_path):
    src = big_file(tmp_path)
    with aws_target(server, prefix, **SMALL_PARTS) as target:
        stored = target.put(src, "multi/video.mp4")
    assert stored.sha256 == src.checksums.sha256  # from the metadata
    assert stored.native == {}  # checksum of part checksums and a "-3" ETag: neither is a digest
    assert stored.version and stored.version.endswith("-3")


def test_a_file_at_the_default_overlap_cutoff_goes_in_one_put_with_its_sha256(server, s3, prefix, tmp_path):
    """With the defaults, a file the pipeline offers while it downloads (at its overlap_cutoff)
    but below S3's multipart_threshold waits for the verified download and is stored in one
    PutObject, so its copy carries what a multipart one cannot: S3's SHA-256 of the whole file
    and the rtk-sha256 metadata (and an MD5 ETag), not only a CRC32C."""
    size = ArchiveConfig.model_fields["overlap_cutoff"].default
    source = GrowingSource.of(tmp_path, size)
    local = source.finish()
    with aws_target(server, prefix) as target:
        assert size < target.settings.multipart_threshold
        stored = target.put_growing(source, "cutoff/video.mp4")
    sha256 = local.checksums.sha256
    assert (stored.size, stored.sha256, stored.native.get("sha256")) == (size, sha256, sha256)
    assert "md5" in stored.native and "crc32c" not in stored.native  # a single part's ETag, no CRC
    head = s3.head_object(Bucket=BUCKET, Key=stored.key)
    assert "-" not in head["ETag"] and head["Metadata"] == {"rtk-sha256": sha256}


# --------------------------------------------------------------------------- Object Lock


def test_object_lock_is_applied_and_a_locked_object_refuses_deletion(server, s3, prefix, tmp_path):
    settings = {"bucket": LOCK_BUCKET, "retention_mode": "COMPLIANCE", "retention_days": 2,
                "legal_hold": True}
    with aws_target(server, prefix, **settings) as target:
        stored = target.put(write(tmp_path, "lock", b"keep me"), "lock/video.mp4")
    assert stored.retention.mode == "COMPLIANCE" and stored.retention.legal_hold
    until = datetime.fromisoformat(stored.retention.until)
    assert abs(until - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=5)
    with pytest.raises(ClientError) as info:
        s3.delete_object(Bucket=LOCK_BUCKET, Key=stored.key, VersionId=stored.version)
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.get_object(Bucket=LOCK_BUCKET, Key=stored.key)["Body"].read() == b"keep me"


def test_legal_hold_alone_is_reported_as_hold(server, prefix, tmp_path):
    with aws_target(server, prefix, bucket=LOCK_BUCKET, legal_hold=True) as target:
        stored = target.put(write(tmp_path, "hold", b"hold"), "hold/video.mp4")
    assert (stored.retention.mode, stored.retention.legal_hold) == ("HOLD", True)


def test_object_lock_on_a_bucket_without_it_is_a_clear_permanent_error(server, s3, prefix, tmp_path):
    with aws_target(server, prefix, retention_mode="GOVERNANCE", retention_days=1) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(write(tmp_path, "nolock", b"x"), "nolock/video.mp4")
    assert f"bucket '{BUCKET}' has no Object Lock" in str(info.value)
    assert not info.value.retryable
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)


def test_object_lock_silently_ignored_by_the_server_is_reported(server, prefix, tmp_path):
    """moto ignores Object Lock on multipart uploads to a bucket without it (real S3 refuses
    CreateMultipartUpload): the adapter must not report that as a protected object."""
    with aws_target(server, prefix, retention_mode="COMPLIANCE", retention_days=1, **SMALL_PARTS) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(big_file(tmp_path, 6 * MiB), "ignored/video.mp4")
    assert "Object Lock" in str(info.value)


# --------------------------------------------------------------------------- never overwrite


@pytest.mark.parametrize("size", [50_000, 11 * MiB], ids=["single-part", "multipart"])
def test_create_only_condition_refuses_a_racing_object(server, s3, prefix, tmp_path, size):
    """The base class's stat-before-put cannot see an object written after it looked; the
    If-None-Match condition on the write itself refuses it."""
    first = write(tmp_path, "first", os.urandom(size))
    with aws_target(server, prefix, **SMALL_PARTS) as target:
        stored = target.put(first, "race/video.mp4")
        with pytest.raises(ObjectConflict):
            with target._errors("upload of race/video.mp4"):  # what put does, minus the stat
                target._upload(write(tmp_path, "second", os.urandom(size)), stored.key, {"rtk_sha256": "x"})
    assert hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=stored.key)["Body"].read()).hexdigest() \
        == first.checksums.sha256
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []


def test_failed_multipart_put_leaves_no_open_upload(server, s3, prefix, tmp_path):
    good = big_file(tmp_path, 12 * MiB)
    broken = FailingFile(path=good.path, size=good.size, checksums=good.checksums)
    with aws_target(server, prefix, **SMALL_PARTS) as target:
        with pytest.raises(RetryableStorageError) as info:
            target.put(broken, "broken/video.mp4")
        with pytest.raises(NotFound):
            target.stat("broken/video.mp4")
    assert "reading the local file failed" in str(info.value)
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []


def test_the_sweep_aborts_multipart_uploads_left_open_under_the_prefix_only(server, s3, prefix, tmp_path):
    """A killed run's open multipart upload (invisible, its parts billed) is aborted by the next
    run's sweep; with an age (a shared ledger: other workers may be uploading) one whose last
    part just arrived stays; an upload outside the target's prefix is never touched."""
    def open_upload(key: str) -> str:
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024)
        return upload

    def still_open(key_prefix: str) -> list[str]:
        return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=key_prefix).get("Uploads", [])]

    open_upload(f"{prefix}/2026/11/30/rec/video.mp4")
    outside = open_upload(f"{prefix}-other/video.mp4")  # a neighbouring prefix, not this target's
    try:
        with aws_target(server, prefix) as target:
            assert target.sweep_partials(older_than=900) == 0  # its part came a moment ago
            assert still_open(f"{prefix}/") == [f"{prefix}/2026/11/30/rec/video.mp4"]
            assert target.sweep_partials() == 1
            assert still_open(f"{prefix}/") == []
            assert target.sweep_partials() == 0
        assert still_open(f"{prefix}-other/") == [f"{prefix}-other/video.mp4"]
    finally:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=f"{prefix}-other/video.mp4", UploadId=outside)


# --------------------------------------------------------------------------- errors


def test_missing_bucket_is_permanent_and_named(server, prefix, tmp_path):
    src = write(tmp_path, "nb", b"x")
    with aws_target(server, prefix, bucket="rtk-no-such-bucket") as target:
        for action in (lambda: target.put(src, "nb/video.mp4"), lambda: target.stat("nb/video.mp4")):
            with pytest.raises(PermanentStorageError) as info:
                action()
            assert not isinstance(info.value, NotFound)
            assert "bucket 'rtk-no-such-bucket' does not exist" in str(info.value)


def test_unreachable_endpoint_is_retryable(prefix, monkeypatch):
    monkeypatch.setattr(s3_module, "BOTO_RETRIES", {"max_attempts": 1, "mode": "standard"})  # fast
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = S3Settings(name="down", bucket="bkt", endpoint=endpoint, access_key="AKIADOWN",
                          secret="down-secret")
    with S3Target(settings) as target, pytest.raises(RetryableStorageError) as info:
        target.stat("x.mp4")
    assert "connection to" in str(info.value) and "down-secret" not in str(info.value)


def _client_error(code: str, status: int, **extra) -> ClientError:
    response = {"Error": {"Code": code, "Message": "server text", **extra},
                "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize("code, status, kind, words", [
    ("SlowDown", 503, RetryableStorageError, "busy"),
    ("InternalError", 500, RetryableStorageError, "busy"),
    ("SomethingNew", 502, RetryableStorageError, "busy"),
    ("RequestTimeout", 400, RetryableStorageError, "busy"),
    ("InvalidAccessKeyId", 403, PermanentStorageError, "check access_key and secret"),
    ("SignatureDoesNotMatch", 403, PermanentStorageError, "check access_key and secret"),
    ("ExpiredToken", 400, PermanentStorageError, "check access_key and secret"),
    ("AccessDenied", 403, PermanentStorageError, "bucket policy"),
    ("NoSuchBucket", 404, PermanentStorageError, "bucket 'bkt' does not exist"),
    ("NoSuchKey", 404, NotFound, "not found"),
    ("PreconditionFailed", 412, ObjectConflict, "never overwrites"),
    ("InvalidRequest", 400, PermanentStorageError, "the server refused"),
    ("NotImplemented", 501, PermanentStorageError, "does not implement"),
    ("RequestTimeTooSkewed", 403, PermanentStorageError, "clock"),
    ("403", 403, PermanentStorageError, "check access_key and secret"),  # HEAD: no body
])
def test_client_errors_are_classified_without_echoing_the_server(code, status, kind, words):
    target = S3Target(S3Settings(name="cls", bucket="bkt"))
    error = target._classify(_client_error(code, status, AWSAccessKeyId="AKIAECHOED"), "upload of k")
    assert type(error) is kind
    assert words in str(error) and "upload of k" in str(error)
    assert "server text" not in str(error) and "AKIAECHOED" not in str(error)


def test_object_lock_invalid_request_is_named():
    target = S3Target(S3Settings(name="cls", bucket="bkt"))
    exc = _client_error("InvalidRequest", 400)
    exc.response["Error"]["Message"] = "Bucket is missing Object Lock Configuration"
    error = target._classify(exc, "upload of k")
    assert isinstance(error, PermanentStorageError) and "has no Object Lock" in str(error)


def test_unknown_failures_still_become_storage_errors():
    target = S3Target(S3Settings(name="cls", bucket="bkt"))
    assert isinstance(target._classify(RuntimeError("boom"), "x"), StorageError)


def test_spaces_profile_round_trip(server, prefix, tmp_path):
    """The Spaces profile reaches a nyc3 bucket through an endpoint override."""
    server.ensure_bucket("rtk-s3-specific-do", "nyc3")
    settings = SpacesSettings(name="do", bucket="rtk-s3-specific-do", region="NYC3",
                              endpoint=server.endpoint, path=prefix, access_key=server.access_key,
                              secret=server.secret)
    src = local_file(write(tmp_path, "do", b"spaces").path)
    with build_target(settings) as target:
        assert target.put(src, "do/video.mp4").sha256 == src.checksums.sha256
        assert target.describe() == f"do://rtk-s3-specific-do/{prefix} @ nyc3"
