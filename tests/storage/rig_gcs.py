"""The gcs rigs: one gcp-storage-emulator (`rig_gcs`) and one fake-gcs-server (`rig_gcs_fake`)
per test session, one bucket each, a prefix per test. The conformance suite runs against both:
gcp-storage-emulator checks declared digests, fake-gcs-server enforces create-only uploads.

Wrong credentials: the emulator checks none, so the rig hands out a real service-account key
(fresh RSA key) whose `token_uri` is a loopback endpoint that refuses every grant: google-auth
performs the JWT-bearer exchange and gets `400 invalid_grant`, as from Google for a revoked key.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.servers.fake_gcs import start_fake_gcs
from tests.servers.gcs_emulator import (
    TokenEndpoint,
    refusing_token_endpoint,
    service_account_json,
    start_gcs_emulator,
)
from tests.storage.rig import Rig

BUCKET = "rtk-conformance"


def emulator_client(endpoint: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="rtk-archive-test", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": endpoint})


class GCSRig(Rig):
    type = "gcs"
    server_name = "gcp-storage-emulator"
    enforces_create_only = False  # it ignores ifGenerationMatch: fake-gcs-server decides that
    refuses_lying_digests = True  # it checks the declared md5Hash / crc32c, as GCS does

    def __init__(self, server, token_endpoint: TokenEndpoint):
        self.server = server
        self.token_endpoint = token_endpoint
        self.client = emulator_client(server.endpoint)
        self.bucket = self.client.create_bucket(BUCKET)
        self._bad_secret: str | None = None

    def target_settings(self, name: str, prefix: str) -> dict:
        # An endpoint without a secret: anonymous access, as the emulator expects.
        return {"name": name, "type": "gcs", "bucket": BUCKET, "path": prefix,
                "endpoint": self.server.endpoint}

    def small_parts(self) -> dict:
        # 12 MiB is over the SDK's 8 MiB multipart limit: a resumable upload in three chunks.
        return {"chunk_size": 4 << 20}

    def bad_credentials(self, name: str, prefix: str) -> tuple[dict, list[str]]:
        if self._bad_secret is None:  # RSA key generation: once per session is enough
            self._bad_secret = service_account_json(self.token_endpoint.url)
        import json

        private_key = json.loads(self._bad_secret)["private_key"]
        key_body = private_key.splitlines()[1]  # a line of the PEM body, as a leak would show it
        return ({**self.target_settings(name, prefix), "secret": self._bad_secret},
                [self._bad_secret, private_key, key_body])

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(blob.name for blob in self.client.list_blobs(BUCKET, prefix=prefix))

    def raw_read(self, full_key: str) -> bytes:
        return self.bucket.blob(full_key).download_as_bytes()

    def raw_write(self, full_key: str, data: bytes) -> None:
        old = self.bucket.get_blob(full_key)
        blob = self.bucket.blob(full_key)
        blob.metadata = old.metadata  # keep the claimed SHA-256: only the bytes change
        blob.upload_from_string(data, checksum=None)

    def raw_delete(self, full_key: str) -> None:
        self.bucket.blob(full_key).delete()

    def plant(self, full_key: str, data: bytes) -> None:
        self.bucket.blob(full_key).upload_from_string(data)

    def everything(self) -> set[str]:
        return set(self.list_keys(""))

    def close(self) -> None:
        self.client.close()


class FakeGCSRig(GCSRig):
    """The same rig on fake-gcs-server, which enforces `ifGenerationMatch=0` on single-request
    uploads (gcp-storage-emulator ignores it): where dropping the create-only precondition
    shows. Its resumable uploads ignore the precondition, so the race cases use small files."""

    server_name = "fake-gcs-server"
    fixture = "rig_gcs_fake"
    enforces_create_only = True  # single-request uploads only: its resumable ones drop it
    refuses_lying_digests = False  # checks nothing on the way in, reports digests of the stored bytes


def _serve(tmp_path_factory, start, rig_class, label: str):
    with contextlib.ExitStack() as stack:
        try:
            server = start(tmp_path_factory.mktemp(label))
        except RuntimeError as exc:
            pytest.fail(f"{label} could not start: {exc}", pytrace=False)
        stack.callback(server.stop)
        token_endpoint = stack.enter_context(refusing_token_endpoint())
        rig = rig_class(server, token_endpoint)
        stack.callback(rig.close)
        yield rig


@pytest.fixture(scope="session")
def rig_gcs_fake(tmp_path_factory):
    yield from _serve(tmp_path_factory, start_fake_gcs, FakeGCSRig, "fake-gcs-server")


@pytest.fixture(scope="session")
def rig_gcs(tmp_path_factory):
    yield from _serve(tmp_path_factory, start_gcs_emulator, GCSRig, "gcp-storage-emulator")


# A second server for gcs, where one server cannot decide every case (see the module doc).
RIGS: dict[str, type[Rig]] = {"gcs": GCSRig, "gcs-fake-gcs-server": FakeGCSRig}
