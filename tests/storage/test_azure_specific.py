"""What only the azure adapter does, against Azurite (fixture `rig_azure`, from conftest)."""

from __future__ import annotations

import base64
import hashlib
import os
import types
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr, ValidationError

from storage import LocalFile, NotFound, PermanentStorageError, RetryableStorageError, build_target
from storage.azure.adapter import AzureTarget, _retention
from storage.azure.settings import AzureSettings
from tests.servers.azurite import ACCOUNT_KEY, connection_string
from tests.servers.process import free_port
from tests.storage.files import source as local_file

# A key-shaped value that must never be echoed (base64, like a real AccountKey).
FAKE_KEY = base64.b64encode(b"a-key-that-must-never-be-printed!" * 2).decode()


def settings(rig_azure, prefix: str = "azure-specific", **overrides) -> AzureSettings:
    return AzureSettings.model_validate({**rig_azure.target_settings("az", prefix), **overrides})


def recording_target(rig_azure, prefix: str, **overrides) -> tuple[AzureTarget, list]:
    """A target whose every HTTP request is recorded (method, query, headers) before it is sent."""
    seen = []

    def hook(request):
        http = request.http_request
        seen.append((http.method, http.url.partition("?")[2], dict(http.headers)))

    target = build_target(settings(rig_azure, prefix, **overrides))
    target._client_kwargs = lambda: {"raw_request_hook": hook}
    return target, seen


# --------------------------------------------------------------------------- connection string


def test_uri_names_the_account_never_the_key(rig_azure, tmp_path):
    src = local_file(tmp_path, os.urandom(1000))
    with build_target(settings(rig_azure, "uri")) as target:
        stored = target.put(src, "rec/video.mp4")
        assert stored.uri == "azure://devstoreaccount1/conformance/uri/rec/video.mp4"
        assert target.describe() == "azure://devstoreaccount1/conformance/uri"
        for text in (stored.uri, target.describe(), repr(target.settings), str(stored)):
            assert ACCOUNT_KEY not in text


def test_account_name_without_accountname_field_comes_from_the_endpoint():
    value = f"BlobEndpoint=https://archive.example.net/;SharedAccessSignature=sv=2024&sig={FAKE_KEY}"
    target = AzureTarget(AzureSettings(name="az", access_key=value, bucket="recordings"))
    assert target.describe() == "azure://archive.example.net/recordings"
    dev = AzureTarget(AzureSettings(name="az", access_key="UseDevelopmentStorage=true", bucket="recordings"))
    assert dev.account == "devstoreaccount1"


@pytest.mark.parametrize("value, says", [
    (f"this is not a connection string {FAKE_KEY}", "Name=value"),
    (f"AccountName=acct;AccountKey={FAKE_KEY};;x", "Name=value"),
    (f"DefaultEndpointsProtocol=https;AccountKey={FAKE_KEY}", "AccountName"),
    ("DefaultEndpointsProtocol=https;AccountName=acct", "AccountKey"),
    (f"AccountName=acct;AccountKey={FAKE_KEY}!!", "base64"),
])
def test_malformed_connection_string_names_access_key_without_echoing_it(value, says):
    with pytest.raises(ValidationError) as info:
        AzureSettings(name="az", access_key=value, bucket="recordings")
    message = str(info.value)
    assert "access_key" in message and says in message
    assert FAKE_KEY not in message and FAKE_KEY not in repr(info.value)


def test_connection_string_the_sdk_refuses_is_permanent_and_secret_free():
    # Past the validator (model_construct), so the SDK's own refusal is what is classified.
    raw = f"AccountKey={FAKE_KEY}"
    bad = AzureSettings.model_construct(name="az", type="azure", access_key=SecretStr(raw), bucket="recordings",
                                        path="", max_concurrency=1, block_size=1 << 20,
                                        max_single_put_size=1 << 20, retention_mode=None,
                                        retention_days=None, legal_hold=False)
    with pytest.raises(PermanentStorageError) as info:
        AzureTarget(bad).stat("x.mp4")
    assert "access_key" in str(info.value)
    assert FAKE_KEY not in str(info.value)
    assert info.value.__cause__ is None  # the SDK's exception is not chained: it could quote the value


def test_secret_and_region_must_be_empty_for_azure(rig_azure):
    assert settings(rig_azure, secret="", region="").secret.get_secret_value() == ""
    with pytest.raises(ValidationError, match="secret is not used"):
        settings(rig_azure, secret="something")
    with pytest.raises(ValidationError, match="region is not used"):
        settings(rig_azure, region="westeurope")


def test_invalid_container_name_is_refused_early(rig_azure):
    with pytest.raises(ValidationError, match="container name"):
        settings(rig_azure, bucket="Recordings_2024")


# --------------------------------------------------------------------------- errors


def test_missing_container_is_permanent_and_named(rig_azure, tmp_path):
    src = local_file(tmp_path, b"x" * 100)
    with build_target(settings(rig_azure, bucket="no-such-container")) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(src, "rec/video.mp4")
    assert not isinstance(info.value, NotFound)
    assert "container no-such-container" in str(info.value) and "does not exist" in str(info.value)


def test_missing_blob_is_not_found(rig_azure):
    with build_target(settings(rig_azure)) as target:
        with pytest.raises(NotFound):
            with target.open_read("nothing/here.mp4") as stream:
                stream.read()


def test_unreachable_service_is_retryable(tmp_path):
    closed = free_port()  # nothing listens there
    target = AzureTarget(AzureSettings(name="az", access_key=connection_string(closed), bucket="recordings"))
    target._client_kwargs = lambda: {"retry_total": 0}  # the SDK's own back-off would take minutes
    with pytest.raises(RetryableStorageError) as info:
        target.stat("x.mp4")
    assert ACCOUNT_KEY not in str(info.value)


# --------------------------------------------------------------------------- integrity


def test_content_md5_is_stored_and_read_back(rig_azure, tmp_path):
    data = os.urandom(12 << 20)
    src = local_file(tmp_path, data)
    small = rig_azure.small_parts()
    with build_target(settings(rig_azure, "md5", **small)) as target:
        stored = target.put(src, "blocks/video.mp4")
    props = rig_azure.container.get_blob_client(stored.key).get_blob_properties()
    assert bytes(props.content_settings.content_md5).hex() == hashlib.md5(data).hexdigest()
    assert props.content_settings.content_type == "video/mp4"
    assert props.metadata["rtk_sha256"] == hashlib.sha256(data).hexdigest()
    assert stored.native == {"md5": hashlib.md5(data).hexdigest()}
    committed, _ = rig_azure.container.get_blob_client(stored.key).get_block_list("committed")
    assert len(committed) == 3  # really went as blocks


def test_block_upload_whose_bytes_differ_from_the_md5_commits_nothing(rig_azure, tmp_path):
    """Azure never checks a block list against the blob's Content-MD5: the adapter must."""
    src = local_file(tmp_path, os.urandom(12 << 20), "a")
    other = local_file(tmp_path, os.urandom(12 << 20), "b")
    lying = LocalFile(path=src.path, size=src.size, checksums=other.checksums)
    with build_target(settings(rig_azure, "md5-lie", **rig_azure.small_parts())) as target:
        with pytest.raises(PermanentStorageError, match="changed after it was verified"):
            target.put(lying, "blocks/video.mp4")
    assert rig_azure.list_keys("md5-lie") == []


def test_tampered_bytes_change_the_native_md5(rig_azure, tmp_path):
    src = local_file(tmp_path, os.urandom(5000))
    with build_target(settings(rig_azure, "tamper")) as target:
        stored = target.put(src, "t/video.mp4")
        rig_azure.raw_write(stored.key, b"something else")
        after = target.stat("t/video.mp4")
    assert after.sha256 == src.checksums.sha256  # the claim survives...
    assert after.native["md5"] != src.checksums.md5  # ...but the evidence does not


# --------------------------------------------------------------------------- retention


def test_only_locked_and_unlocked_retention_modes(rig_azure):
    for mode in ("GOVERNANCE", "COMPLIANCE", "READ_ONLY"):
        with pytest.raises(ValidationError, match="not available on azure"):
            settings(rig_azure, retention_mode=mode, retention_days=30)
    with pytest.raises(ValidationError, match="go together"):
        settings(rig_azure, retention_days=30)
    assert settings(rig_azure, retention_mode="LOCKED", retention_days=30).retention_mode == "LOCKED"


def test_immutability_policy_and_legal_hold_arguments(rig_azure, tmp_path):
    from azure.storage.blob import BlobImmutabilityPolicyMode

    target = build_target(settings(rig_azure, retention_mode="LOCKED", retention_days=30, legal_hold=True))
    src = local_file(tmp_path, b"abc")
    kwargs = target._upload_kwargs(src, "k.mp4", {"rtk_sha256": src.checksums.sha256})
    policy = kwargs["immutability_policy"]
    assert policy.policy_mode == BlobImmutabilityPolicyMode.LOCKED
    expected = datetime.now(timezone.utc) + timedelta(days=30)
    assert abs((policy.expiry_time - expected).total_seconds()) < 60
    assert kwargs["legal_hold"] is True
    assert kwargs["overwrite"] is False and kwargs["validate_content"] is True
    plain = build_target(settings(rig_azure))._upload_kwargs(src, "k.mp4", {})
    assert "immutability_policy" not in plain and "legal_hold" not in plain


def test_account_without_immutability_gives_a_clear_permanent_error_and_no_blob(rig_azure, tmp_path):
    """Azurite takes the policy headers with the upload but keeps nothing, and answers the
    explicit Set Blob Immutability Policy with 501: the adapter must say so and clean up."""
    target, seen = recording_target(rig_azure, "immutability", retention_mode="UNLOCKED", retention_days=7)
    with target, pytest.raises(PermanentStorageError) as info:
        target.put(local_file(tmp_path, os.urandom(2000)), "rec/video.mp4")
    message = str(info.value)
    assert "refused the immutability policy" in message and "container conformance" in message
    assert "HTTP 501" in message
    upload = [h for m, q, h in seen if m == "PUT" and not q.startswith("comp=")]
    assert upload and upload[0]["x-ms-immutability-policy-mode"] == "Unlocked"
    until = datetime.strptime(upload[0]["x-ms-immutability-policy-until-date"], "%a, %d %b %Y %H:%M:%S GMT")
    assert abs((until - datetime.utcnow() - timedelta(days=7)).total_seconds()) < 120
    explicit = [h for m, q, h in seen if q.startswith("comp=immutabilityPolicies")]
    assert explicit and explicit[0]["x-ms-immutability-policy-mode"] == "Unlocked"
    assert rig_azure.list_keys("immutability") == []


def test_legal_hold_refused_by_the_account_leaves_no_blob(rig_azure, tmp_path):
    target, seen = recording_target(rig_azure, "hold", legal_hold=True)
    with target, pytest.raises(PermanentStorageError, match="legal hold"):
        target.put(local_file(tmp_path, os.urandom(2000)), "rec/video.mp4")
    upload = [h for m, q, h in seen if m == "PUT" and not q.startswith("comp=")]
    assert upload[0]["x-ms-legal-hold"] == "true"
    assert any(q.startswith("comp=legalhold") and h["x-ms-legal-hold"] == "true" for m, q, h in seen)
    assert rig_azure.list_keys("hold") == []


def test_retention_is_reported_from_the_blob_properties():
    expiry = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    props = types.SimpleNamespace(
        immutability_policy=types.SimpleNamespace(expiry_time=expiry, policy_mode="Locked"),
        has_legal_hold=True)
    retention = _retention(props)
    assert (retention.mode, retention.until, retention.legal_hold) == ("LOCKED", "2031-01-02T03:04:05.000Z", True)
    hold_only = types.SimpleNamespace(immutability_policy=types.SimpleNamespace(expiry_time=None, policy_mode=None),
                                      has_legal_hold=True)
    assert _retention(hold_only).mode == "HOLD"
    none = types.SimpleNamespace(immutability_policy=types.SimpleNamespace(expiry_time=None, policy_mode=None),
                                 has_legal_hold=None)
    assert _retention(none) is None
