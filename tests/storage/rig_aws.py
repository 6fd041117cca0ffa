"""`aws` rig: a bucket on the session's moto server (tests/servers/moto.py)."""

from __future__ import annotations

import pytest

from tests.servers.moto import MotoServer, shared_moto
from tests.storage.rig import Rig

MiB = 1 << 20


class S3Rig(Rig):
    """Reaches the bucket behind the adapter's back with a plain boto3 client."""

    type = "aws"

    def __init__(self, server: MotoServer, bucket: str, region: str):
        self.server = server
        self.bucket = bucket
        self.region = region
        server.ensure_bucket(bucket, region)
        self.s3 = server.client(region=region)
        self._auth_changed = False

    def target_settings(self, name: str, prefix: str) -> dict:
        return {
            "name": name, "type": self.type, "bucket": self.bucket, "region": self.region,
            "endpoint": self.server.endpoint, "path": prefix,
            "access_key": self.server.access_key, "secret": self.server.secret,
        }

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


@pytest.fixture
def rig_aws(request, tmp_path_factory):
    rig = S3Rig(shared_moto(request.config, tmp_path_factory), "rtk-conformance-aws", "us-east-1")
    yield rig
    rig.restore()
