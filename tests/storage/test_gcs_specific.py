"""What only the gcs adapter does, against gcp-storage-emulator (fixture `rig_gcs`, from conftest).

The emulator ignores object retention and temporary holds: these tests check what is sent on the
wire and that the adapter refuses to leave an object the bucket did not protect."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timedelta, timezone

import google_crc32c
import pytest
from pydantic import ValidationError

from storage import NotFound, PermanentStorageError, build_target
from storage.gcs.adapter import GCSTarget, retention_of
from storage.gcs.settings import GCSSettings
from tests.servers.gcs_emulator import service_account_json
from tests.storage.files import source as local_file

MiB = 1 << 20


def settings(rig_gcs, prefix: str = "gcs-specific", **overrides) -> GCSSettings:
    return GCSSettings.model_validate({**rig_gcs.target_settings("gs", prefix), **overrides})


def record_requests(target: GCSTarget) -> list:
    """Every request this thread's client sends: (method, url, body as text)."""
    seen = []

    def hook(response, *args, **kwargs):
        request = response.request
        body = request.body if isinstance(request.body, (bytes, str)) else b""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        seen.append((request.method, request.url, text))

    target.client()._http.hooks["response"].append(hook)
    return seen


def upload_metadata(body: str) -> dict:
    """The object resource sent with an upload: the JSON part of a multipart body, or the whole
    body of a resumable session's first request."""
    for line in body.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no JSON object resource in the upload request")


@pytest.fixture(scope="module")
def sa_json() -> str:
    return service_account_json("http://127.0.0.1:9/token")


# --------------------------------------------------------------------------- settings


def test_secret_as_raw_json_and_as_base64_are_both_accepted(sa_json):
    encoded = base64.b64encode(sa_json.encode()).decode()
    for secret in (sa_json, encoded, f"  {encoded}\n"):
        target = GCSTarget(GCSSettings(name="gs", bucket="b", secret=secret))
        credentials, project = target._credentials()
        assert credentials.service_account_email == "archiver@rtk-archive-test.iam.gserviceaccount.com"
        assert project == "rtk-archive-test"


@pytest.mark.parametrize("make_secret, says", [
    (lambda sa: "definitely-not-json-" + "s3cr3t" * 8, "neither service-account JSON nor base64"),
    (lambda sa: base64.b64encode(b"s3cr3t" * 8).decode(), "not valid JSON"),
    (lambda sa: sa[:-10], "not valid JSON"),
    (lambda sa: json.dumps({**json.loads(sa), "type": "external_account"}), "not a service-account key"),
    (lambda sa: json.dumps({k: v for k, v in json.loads(sa).items() if k != "client_email"}), "lacks client_email"),
])
def test_invalid_secret_names_secret_without_echoing_it(sa_json, make_secret, says):
    secret = make_secret(sa_json)
    with pytest.raises(ValidationError) as info:
        GCSSettings(name="gs", bucket="b", secret=secret)
    message = str(info.value)
    assert "secret" in message and says in message
    for fragment in (secret, secret[:40], "s3cr3t", "PRIVATE KEY"):
        assert fragment not in message and fragment not in repr(info.value)


def test_damaged_private_key_is_permanent_and_named(sa_json):
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    damaged = json.dumps({**json.loads(sa_json), "private_key": pem})
    target = GCSTarget(GCSSettings(name="gs", bucket="b", secret=damaged))
    with pytest.raises(PermanentStorageError, match="private_key cannot be loaded") as info:
        target.stat("x.mp4")
    assert "AAAA" not in str(info.value)


@pytest.mark.parametrize("size, ok", [(256 * 1024, True), (16 * MiB, True), (5 * MiB + 1, False),
                                      (100_000, False), (128 * 1024, False)])
def test_chunk_size_must_be_a_multiple_of_256_kib(size, ok):
    if ok:
        assert GCSSettings(name="gs", bucket="b", chunk_size=size).chunk_size == size
    else:
        with pytest.raises(ValidationError, match="chunk_size"):
            GCSSettings(name="gs", bucket="b", chunk_size=size)


def test_access_key_must_be_empty_and_region_is_informational():
    assert GCSSettings(name="gs", bucket="b", access_key="", region="US multi-region").access_key is None
    with pytest.raises(ValidationError, match="access_key is not used") as info:
        GCSSettings(name="gs", bucket="b", access_key="AKIA-should-not-be-here")
    assert "AKIA-should-not-be-here" not in str(info.value)


def test_only_locked_and_unlocked_retention_modes():
    for mode in ("GOVERNANCE", "COMPLIANCE", "READ_ONLY"):
        with pytest.raises(ValidationError, match="not available on gcs"):
            GCSSettings(name="gs", bucket="b", retention_mode=mode, retention_days=3)
    with pytest.raises(ValidationError, match="go together"):
        GCSSettings(name="gs", bucket="b", retention_mode="LOCKED")


# --------------------------------------------------------------------------- access


def test_endpoint_without_secret_is_anonymous(rig_gcs, tmp_path):
    from google.auth.credentials import AnonymousCredentials

    target = build_target(settings(rig_gcs, "anon"))
    credentials, _project = target._credentials()
    assert isinstance(credentials, AnonymousCredentials)
    seen = record_requests(target)
    with target:
        target.put(local_file(tmp_path, b"anonymous" * 100), "a/video.mp4")
    assert seen and all(method in ("GET", "POST") for method, _url, _body in seen)


def test_wrong_credentials_really_ask_the_token_endpoint(rig_gcs, tmp_path):
    before = rig_gcs.token_endpoint.requests
    bad, _secrets = rig_gcs.bad_credentials("gs", "creds")
    with build_target(GCSSettings.model_validate(bad)) as target:
        with pytest.raises(PermanentStorageError, match="check secret"):
            target.stat("x.mp4")
    assert rig_gcs.token_endpoint.requests > before


def test_missing_bucket_is_permanent_and_named(rig_gcs, tmp_path):
    with build_target(settings(rig_gcs, bucket="no-such-bucket")) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(local_file(tmp_path, b"x" * 10), "rec/video.mp4")
    assert not isinstance(info.value, NotFound)
    assert "bucket no-such-bucket does not exist" in str(info.value)


# --------------------------------------------------------------------------- integrity


@pytest.mark.parametrize("size", [70_000, 12 * MiB])  # multipart, then resumable
def test_md5_and_crc32c_are_sent_and_read_back_as_hex(rig_gcs, tmp_path, size):
    data = os.urandom(size)
    src = local_file(tmp_path, data)
    target = build_target(settings(rig_gcs, f"digests-{size}", **rig_gcs.small_parts()))
    seen = record_requests(target)
    with target:
        stored = target.put(src, "d/video.mp4")
    crc = google_crc32c.value(data).to_bytes(4, "big")
    assert stored.native == {"md5": hashlib.md5(data).hexdigest(), "crc32c": crc.hex()}
    assert len(stored.native["crc32c"]) == 8
    raw = rig_gcs.bucket.get_blob(stored.key)
    assert raw.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert raw.content_type == "video/mp4"
    # The declared digests travel with the object resource, so GCS checks them on arrival.
    url, body = next((url, body) for method, url, body in seen if "/upload/" in url)
    sent = upload_metadata(body)
    assert sent["md5Hash"] == src.checksums.md5_base64
    assert sent["crc32c"] == src.checksums.crc32c_base64
    assert sent["metadata"]["rtk_sha256"] == src.checksums.sha256
    assert ("uploadType=resumable" in url) == (size > 8 * MiB)


def test_object_failing_the_client_side_crc32c_check_is_removed(rig_gcs, tmp_path, monkeypatch):
    """The SDK raises DataCorruption after an upload whose stored CRC32C differs from the bytes
    sent; the emulator never produces one, so the object is made for real and the SDK's verdict
    is simulated. No object may remain."""
    from google.cloud import storage
    from google.cloud.storage.exceptions import DataCorruption

    real_upload = storage.Blob.upload_from_file

    def upload_then_corrupt(self, *args, **kwargs):
        real_upload(self, *args, **kwargs)
        raise DataCorruption(None, "Checksum mismatch while uploading")

    monkeypatch.setattr(storage.Blob, "upload_from_file", upload_then_corrupt)
    with build_target(settings(rig_gcs, "corrupt")) as target:
        with pytest.raises(PermanentStorageError, match="corrupted on transfer"):
            target.put(local_file(tmp_path, os.urandom(3000)), "c/video.mp4")
    assert rig_gcs.list_keys("corrupt") == []


def test_open_read_of_a_missing_object_is_not_found(rig_gcs):
    with build_target(settings(rig_gcs)) as target:
        with pytest.raises(NotFound):
            with target.open_read("nothing/here.mp4") as stream:
                stream.read()


# --------------------------------------------------------------------------- retention


def test_object_retention_is_sent_with_the_upload_and_an_unprotected_object_is_removed(rig_gcs, tmp_path):
    target = build_target(settings(rig_gcs, "retention", retention_mode="LOCKED", retention_days=30))
    seen = record_requests(target)
    with target, pytest.raises(PermanentStorageError) as info:
        target.put(local_file(tmp_path, os.urandom(4000)), "r/video.mp4")
    assert "without the requested retention" in str(info.value)
    assert "bucket rtk-conformance" in str(info.value)
    sent = upload_metadata(next(body for method, url, body in seen if "/upload/" in url))
    assert sent["retention"]["mode"] == "Locked"
    until = datetime.fromisoformat(sent["retention"]["retainUntilTime"].replace("Z", "+00:00"))
    assert abs(until - datetime.now(timezone.utc) - timedelta(days=30)) < timedelta(minutes=2)
    assert rig_gcs.list_keys("retention") == []


def test_temporary_hold_is_patched_after_the_upload_and_checked(rig_gcs, tmp_path):
    target = build_target(settings(rig_gcs, "hold", legal_hold=True))
    seen = record_requests(target)
    with target, pytest.raises(PermanentStorageError, match="temporary hold"):
        target.put(local_file(tmp_path, os.urandom(4000)), "h/video.mp4")
    patches = [(url, json.loads(body)) for method, url, body in seen if method == "PATCH"]
    assert patches and patches[0][1] == {"temporaryHold": True}
    assert "ifGenerationMatch=" in patches[0][0]  # holds exactly the generation just written
    assert rig_gcs.list_keys("hold") == []


def test_retention_is_reported_from_the_object(rig_gcs):
    from google.cloud import storage

    blob = storage.Blob("k", rig_gcs.bucket)
    blob._properties.update({"retention": {"mode": "Unlocked", "retainUntilTime": "2031-01-02T03:04:05.000Z"},
                             "temporaryHold": True})
    retention = retention_of(blob)
    assert (retention.mode, retention.until, retention.legal_hold) == ("UNLOCKED", "2031-01-02T03:04:05.000Z", True)
    hold_only = storage.Blob("k", rig_gcs.bucket)
    hold_only._properties["eventBasedHold"] = True
    assert retention_of(hold_only).mode == "HOLD"
    assert retention_of(storage.Blob("k", rig_gcs.bucket)) is None
