"""The S3-compatible providers as data (storage/s3/providers.py): each entry's settings rules,
its endpoint, and what its uploads really send, against the session's moto server (one rig per
provider, tests/storage/rig_s3.py)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from storage import settings_model
from storage.s3.providers import PROVIDERS
from tests.storage.files import make_target, write

ACCOUNT = "0123456789abcdef0123456789abcdef"


def settings(type_name: str, **fields):
    return settings_model(type_name).model_validate({"name": "t", "type": type_name, "bucket": "bkt", **fields})


@pytest.mark.parametrize("type_name, fields, endpoint", [
    ("r2", {"account_id": ACCOUNT}, f"https://{ACCOUNT}.r2.cloudflarestorage.com"),
    ("b2", {"region": "us-west-004"}, "https://s3.us-west-004.backblazeb2.com"),
    ("wasabi", {"region": "EU-Central-2"}, "https://s3.eu-central-2.wasabisys.com"),
    ("minio", {"endpoint": "https://minio.example.test:9000/"}, "https://minio.example.test:9000"),
    ("digitalocean", {"region": "nyc3"}, "https://nyc3.digitaloceanspaces.com"),
])
def test_the_endpoint_comes_from_the_provider_entry_without_network(type_name, fields, endpoint):
    """Each provider's endpoint pattern gives the URL the client talks to (building a client
    sends nothing); third-party providers address buckets path-style."""
    with make_target(_Offline(type_name, fields), "p") as target:
        client = target._s3()
        assert client.meta.endpoint_url == endpoint
        style = client.meta.config.s3["addressing_style"]
    assert style == PROVIDERS[type_name].addressing


class _Offline:
    """A rig-shaped stand-in for settings only: nothing is contacted."""

    def __init__(self, type_name: str, fields: dict):
        self.type_name, self.fields = type_name, fields

    def target_settings(self, name: str, prefix: str) -> dict:
        return {"name": name, "type": self.type_name, "bucket": "bkt", "path": prefix, **self.fields}


@pytest.mark.parametrize("type_name, fields, words", [
    ("r2", {"account_id": ACCOUNT, "region": "eu-west-1"}, "region is always auto on r2"),
    ("r2", {}, "account_id is required for r2"),
    ("aws", {"account_id": ACCOUNT}, "account_id is not used by aws targets"),
    ("minio", {}, "endpoint is required for minio"),
    ("b2", {}, "region"),
    ("wasabi", {}, "region"),
])
def test_each_provider_holds_its_settings_to_its_rules(type_name, fields, words):
    """Missing or contradictory settings are one clear error when the configuration loads."""
    with pytest.raises(ValidationError) as info:
        settings(type_name, **fields)
    assert words in str(info.value)


@pytest.mark.parametrize("type_name", [t for t, p in PROVIDERS.items() if not p.object_lock])
@pytest.mark.parametrize("fields, words", [
    ({"retention_mode": "COMPLIANCE", "retention_days": 7}, "it offers no retention"),
    ({"legal_hold": True}, "cannot enforce legal_hold"),
])
def test_write_once_settings_are_refused_where_the_provider_entry_offers_none(type_name, fields, words):
    """A provider whose entry offers no Object Lock refuses retention_mode and legal_hold when
    the configuration loads, instead of failing every upload at night."""
    required = {"account_id": ACCOUNT} if type_name == "r2" else {"region": "us-west-004"}
    with pytest.raises(ValidationError) as info:
        settings(type_name, **required, **fields)
    assert words in str(info.value)


@pytest.mark.parametrize("type_name", list(PROVIDERS))
def test_an_upload_sends_what_the_provider_entry_says(type_name, request, prefix, tmp_path):
    """What goes on the wire follows the entry: `If-None-Match: *` only to providers that honour
    conditional writes, a SHA-256 flexible checksum only where the entry names one, and no
    flexible checksum header at all (not even botocore's default CRC) to the others."""
    rig = request.getfixturevalue(f"rig_{type_name}")
    provider = PROVIDERS[type_name]
    sent = []
    with make_target(rig, prefix) as target:
        target._s3().meta.events.register("before-send.s3.PutObject",
                                          lambda request, **_: sent.append(dict(request.headers)))
        target.put(write(tmp_path, "w", os.urandom(20_000)), "wire/video.mp4")
    assert len(sent) == 1
    headers = {name.lower(): value.decode() if isinstance(value, bytes) else value
               for name, value in sent[0].items()}
    assert (headers.get("if-none-match") == "*") is provider.conditional_writes
    checksums = {name for name in headers if name.startswith("x-amz-checksum-") or
                 name == "x-amz-sdk-checksum-algorithm" or name == "x-amz-trailer"}
    if provider.checksum == "SHA256":
        assert "x-amz-checksum-sha256" in checksums or headers.get("x-amz-trailer") == "x-amz-checksum-sha256"
    else:
        assert checksums == set()


@pytest.mark.parametrize("type_name", [t for t, p in PROVIDERS.items() if not p.conditional_writes])
def test_the_probe_says_when_create_only_rests_on_the_look_before_each_write(type_name, request, prefix):
    """README "Targets": where a provider has no conditional write, the preflight probe says
    that create-only rests on put's look before each write alone."""
    with make_target(request.getfixturevalue(f"rig_{type_name}"), prefix) as target:
        write_check = [r for r in target.probe() if r.check == "write"][0]
    assert write_check.status == "ok"
    assert "create-only rests on the look before each write alone" in write_check.detail
