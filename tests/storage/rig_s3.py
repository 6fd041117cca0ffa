"""The rigs of every S3-compatible provider: a bucket each on the session's one moto server
(tests/servers/moto.py), reached through the provider's profile with `endpoint` pointing at moto.
A new provider is one line in S3_RIGS."""

from __future__ import annotations

from typing import ClassVar

import pytest

from storage.s3.providers import PROVIDERS
from tests.servers.moto import MotoServer, shared_moto
from tests.storage.rig import Rig

MiB = 1 << 20

# type -> (bucket, the region it is created in at moto, the target's region; None: the
# provider's own rule, such as r2's fixed "auto")
S3_RIGS: dict[str, tuple[str, str, str | None]] = {
    "aws": ("rtk-conformance-aws", "us-east-1", "us-east-1"),
    "digitalocean": ("rtk-conformance-do", "nyc3", "nyc3"),
    "r2": ("rtk-conformance-r2", "us-east-1", None),
    "b2": ("rtk-conformance-b2", "us-west-004", "us-west-004"),
    "wasabi": ("rtk-conformance-wasabi", "eu-central-2", "eu-central-2"),
    "minio": ("rtk-conformance-minio", "us-east-1", None),
}


class S3Rig(Rig):
    """Reaches the bucket behind the adapter's back with a plain boto3 client."""

    type: ClassVar[str] = "aws"

    def __init__(self, server: MotoServer, bucket: str, region: str, target_region: str | None):
        self.server = server
        self.bucket = bucket
        self.region = region
        self.target_region = target_region
        server.ensure_bucket(bucket, region)
        self.s3 = server.client(region=region)
        self._auth_changed = False

    def target_settings(self, name: str, prefix: str) -> dict:
        settings = {
            "name": name, "type": self.type, "bucket": self.bucket,
            "endpoint": self.server.endpoint, "path": prefix,
            "access_key": self.server.access_key, "secret": self.server.secret,
        }
        if self.target_region is not None:
            settings["region"] = self.target_region
        return settings

    def small_parts(self) -> dict:
        return {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB}  # S3's minimum part

    def bad_credentials(self, name: str, prefix: str) -> tuple[dict, list[str]]:
        # moto only refuses keys while IAM enforcement is on; the fixture switches it off again.
        self.server.set_auth(True)
        self._auth_changed = True
        bad_key, bad_secret = "AKIARTKARCHIVEBADKEY", "rtk-archive-wrong-secret-0123456789abcdef"
        settings = {**self.target_settings(name, prefix), "access_key": bad_key, "secret": bad_secret}
        return settings, [bad_key, bad_secret]

    def restore(self) -> None:
        if self._auth_changed:
            self.server.set_auth(False)

    def list_keys(self, prefix: str) -> list[str]:
        """Objects and open multipart uploads: a dangling upload is a leftover too."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        keys += [upload["Key"] for upload in uploads.get("Uploads", [])]
        return sorted(keys)

    def raw_read(self, full_key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=full_key)["Body"].read()

    def raw_write(self, full_key: str, data: bytes) -> None:
        metadata = self.s3.head_object(Bucket=self.bucket, Key=full_key)["Metadata"]
        self.s3.put_object(Bucket=self.bucket, Key=full_key, Body=data, Metadata=metadata)

    def raw_delete(self, full_key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=full_key)

    def plant(self, full_key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=full_key, Body=data)

    def everything(self) -> set[str]:
        return set(self.list_keys(""))


def _rig(type_name: str, bucket: str, region: str, target_region: str | None):
    provider = PROVIDERS[type_name]
    # moto honours If-None-Match whenever the adapter sends it: where the provider's entry does.
    rig_class = type(f"{type_name.title()}Rig", (S3Rig,), {
        "type": type_name, "enforces_create_only": provider.conditional_writes,
        "create_only_in_parts": provider.conditional_writes})

    @pytest.fixture(name=f"rig_{type_name}")
    def fixture(request, tmp_path_factory):
        rig = rig_class(shared_moto(request.config, tmp_path_factory), bucket, region, target_region)
        yield rig
        rig.restore()

    return rig_class, fixture


RIGS: dict[str, type[Rig]] = {}
for _type, _spec in S3_RIGS.items():
    RIGS[_type], globals()[f"rig_{_type}"] = _rig(_type, *_spec)
