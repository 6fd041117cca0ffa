"""The azure rig: one Azurite per test session, one container, a prefix per test."""

from __future__ import annotations

import base64

import pytest

from tests.servers.azurite import Azurite, connection_string, start_azurite
from tests.storage.rig import Rig

CONTAINER = "conformance"


class AzureRig(Rig):
    type = "azure"
    create_only_in_parts = True  # If-None-Match on the block list too
    refuses_lying_digests = True  # the adapter checks the bytes' CRC32C before the commit

    def __init__(self, server: Azurite):
        from azure.storage.blob import BlobServiceClient

        self.server = server
        self.service = BlobServiceClient.from_connection_string(server.connection_string)
        self.container = self.service.get_container_client(CONTAINER)
        self.container.create_container()

    def target_settings(self, name: str, prefix: str) -> dict:
        return {"name": name, "type": "azure", "access_key": self.server.connection_string,
                "bucket": CONTAINER, "path": prefix}

    def small_parts(self) -> dict:
        # 12 MiB goes in three 4 MiB blocks, two at a time.
        return {"block_size": 4 << 20, "max_single_put_size": 4 << 20, "max_concurrency": 2}

    def bad_credentials(self, name: str, prefix: str) -> tuple[dict, list[str]]:
        # A well-formed key that is not the account's: Azurite checks the SharedKey signature.
        wrong_key = base64.b64encode(b"not-the-account-key-" * 3).decode()
        wrong = connection_string(self.server.port, key=wrong_key)
        return {**self.target_settings(name, prefix), "access_key": wrong}, [wrong, wrong_key]

    def list_keys(self, prefix: str) -> list[str]:
        # Committed blobs only, as a reader of the account sees them; staged blocks are invisible.
        return sorted(blob.name for blob in self.container.list_blobs(name_starts_with=prefix))

    def raw_read(self, full_key: str) -> bytes:
        return self.container.get_blob_client(full_key).download_blob().readall()

    def raw_write(self, full_key: str, data: bytes) -> None:
        blob = self.container.get_blob_client(full_key)
        metadata = blob.get_blob_properties().metadata
        # Azure recomputes Content-MD5 for a single Put Blob, as it would for a tamperer.
        blob.upload_blob(data, overwrite=True, metadata=metadata)

    def raw_delete(self, full_key: str) -> None:
        self.container.get_blob_client(full_key).delete_blob()

    def plant(self, full_key: str, data: bytes) -> None:
        self.container.get_blob_client(full_key).upload_blob(data)

    def everything(self) -> set[str]:
        # Committed blobs: staged, uncommitted blocks are invisible to readers and Azure discards
        # them after a week (test_probe checks what the write probe leaves there).
        return {blob.name for blob in self.container.list_blobs()}

    def close(self) -> None:
        self.service.close()


@pytest.fixture(scope="session")
def rig_azure(tmp_path_factory):
    try:
        server = start_azurite(tmp_path_factory.mktemp("azurite"))
    except RuntimeError as exc:
        pytest.fail(f"Azurite could not start: {exc}", pytrace=False)
    rig = AzureRig(server)
    yield rig
    rig.close()
    server.stop()


RIGS: dict[str, type[Rig]] = {"azure": AzureRig}
