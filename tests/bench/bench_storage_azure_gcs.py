"""Benchmark: the azure and gcs adapters' `put` against each SDK's own plain upload.

    python tests/bench/bench_storage_azure_gcs.py [--size-mb 200] [--rounds 3]

Starts Azurite and gcp-storage-emulator on 127.0.0.1, writes one random file, and uploads it in
rounds whose order rotates: (a) the SDK's plain upload (azure `upload_blob(max_concurrency=…)`, gcs
`upload_from_filename` with the same chunk size), (b) the adapter's `put`, which adds the
stat-before-put, the checksums and the stat afterwards, and, to tell where the difference comes
from, (c) the SDK's upload with the same integrity options as the adapter (azure
`validate_content=True` + Content-MD5, gcs declared md5Hash/crc32c + `checksum="crc32c"`).
Rotating the order keeps drift in the emulators from favouring one side. Each object is deleted after its round so
the in-memory GCS emulator does not grow. The emulators bound the speed: compare the two columns
of one run, not figures from different days.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.hashing import hash_file  # noqa: E402
from storage import LocalFile, build_target, settings_model  # noqa: E402
from tests.servers.azurite import running_azurite  # noqa: E402
from tests.servers.gcs_emulator import running_gcs_emulator  # noqa: E402

MiB = 1 << 20
CONTAINER = "bench"
BUCKET = "rtk-bench"
AZURE_TUNING = {"max_concurrency": 8, "block_size": 8 * MiB, "max_single_put_size": 64 * MiB}
GCS_CHUNK = 16 * MiB


def make_file(folder: Path, size_mb: int) -> LocalFile:
    path = folder / "bench.bin"
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(MiB))
    hasher = hash_file(path)
    return LocalFile(path=path, size=hasher.size, checksums=hasher.checksums())


def timed(action, *args) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- azure


def azure_rounds(server, src: LocalFile, rounds: int) -> dict[str, list[float]]:
    from azure.storage.blob import BlobServiceClient, ContentSettings

    service = BlobServiceClient.from_connection_string(
        server.connection_string, max_block_size=AZURE_TUNING["block_size"],
        max_single_put_size=AZURE_TUNING["max_single_put_size"])
    container = service.get_container_client(CONTAINER)
    container.create_container()
    raw = {"name": "bench-azure", "type": "azure", "access_key": server.connection_string,
           "bucket": CONTAINER, "path": "adapter", **AZURE_TUNING}
    target = build_target(settings_model("azure").model_validate(raw))

    def sdk_upload(key: str, **integrity) -> None:
        with open(src.path, "rb") as fh:
            container.get_blob_client(key).upload_blob(
                fh, length=src.size, max_concurrency=AZURE_TUNING["max_concurrency"], **integrity)

    checked = {"validate_content": True,
               "content_settings": ContentSettings(content_md5=bytearray.fromhex(src.checksums.md5))}
    variants = {
        "sdk": (lambda key: sdk_upload(key), lambda key: key),
        "adapter": (lambda key: target.put(src, key), lambda key: f"adapter/{key}"),
        "sdk+checks": (lambda key: sdk_upload(key, **checked), lambda key: key),
    }
    with target:
        times = run_rounds(variants, rounds, container.delete_blob)
    service.close()
    return times


def gcs_rounds(server, src: LocalFile, rounds: int) -> dict[str, list[float]]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": server.endpoint})
    bucket = client.create_bucket(BUCKET)
    raw = {"name": "bench-gcs", "type": "gcs", "bucket": BUCKET, "path": "adapter",
           "endpoint": server.endpoint, "chunk_size": GCS_CHUNK}
    target = build_target(settings_model("gcs").model_validate(raw))

    def sdk_upload(key: str) -> None:
        bucket.blob(key, chunk_size=GCS_CHUNK).upload_from_filename(str(src.path))

    def sdk_checked(key: str) -> None:
        blob = bucket.blob(key, chunk_size=GCS_CHUNK)
        blob.md5_hash, blob.crc32c = src.checksums.md5_base64, src.checksums.crc32c_base64
        with open(src.path, "rb") as fh:
            blob.upload_from_file(fh, size=src.size, checksum="crc32c", if_generation_match=0)

    variants = {
        "sdk": (sdk_upload, lambda key: key),
        "adapter": (lambda key: target.put(src, key), lambda key: f"adapter/{key}"),
        "sdk+checks": (sdk_checked, lambda key: key),
    }
    with target:
        times = run_rounds(variants, rounds, lambda key: bucket.blob(key).delete())
    client.close()
    return times


def run_rounds(variants: dict, rounds: int, delete) -> dict[str, list[float]]:
    """Each round runs every variant once, on a fresh key, then deletes the object; the order
    of the variants rotates from round to round, so none always goes first."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_no in range(rounds):
        for name in names[round_no % len(names):] + names[:round_no % len(names)]:
            upload, stored_key = variants[name]
            key = f"{uuid.uuid4().hex}.mp4"
            times[name].append(timed(upload, key))
            delete(stored_key(key))
    return times


# --------------------------------------------------------------------------- report


def report(backend: str, size: int, times: dict[str, list[float]]) -> None:
    mb = size / 1e6
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{backend}:")
    for name, values in times.items():
        rounds = ", ".join(f"{mb / t:.0f}" for t in values)
        print(f"  {name:11} {mb / median[name]:7.1f} MB/s (median; rounds {rounds})")
    print(f"  adapter overhead vs plain SDK: {(median['adapter'] / median['sdk'] - 1) * 100:+.1f}%   "
          f"vs SDK with the same checks: {(median['adapter'] / median['sdk+checks'] - 1) * 100:+.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtk-bench-") as tmp:
        folder = Path(tmp)
        src = make_file(folder, args.size_mb)
        print(f"file: {src.size / 1e6:.0f} MB, {args.rounds} rounds, the order of the variants rotating")
        (folder / "azurite").mkdir()
        with running_azurite(folder / "azurite") as azurite:
            report("azure", src.size, azure_rounds(azurite, src, args.rounds))
        (folder / "gcs").mkdir()
        with running_gcs_emulator(folder / "gcs") as emulator:
            report("gcs", src.size, gcs_rounds(emulator, src, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
