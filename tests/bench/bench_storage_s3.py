"""Benchmark: what the S3 adapter costs on top of a plain boto3 upload.

Run from the repository root:  python tests/bench/bench_storage_s3.py [--size-mb 200] [--rounds 3]

Starts its own moto server, writes one random file, then alternates, round after round:
  (a) boto3 `upload_file` with the same TransferConfig as the adapter (boto3's defaults for
      everything else, i.e. its default CRC32 request checksum);
  (b) `S3Target.put` (stat before put, SHA-256 request checksum, metadata, If-None-Match,
      stat after put).
Then it times the adapter's own extra work alone (two HEADs, SHA-256 instead of CRC32).
Alternating spreads any drift of the server (memory, disk cache) over both. moto, not the
network, bounds these figures: compare the two columns, never against another day's run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

# A script, not a test module: make the repository importable when run by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from boto3.s3.transfer import TransferConfig

from pipeline.hashing import hash_file
from storage import LocalFile, NotFound
from storage.s3.adapter import S3Target
from storage.s3.settings import SETTINGS_MODELS
from tests.servers.moto import start_moto

S3Settings = SETTINGS_MODELS["aws"]
BUCKET = "rtk-bench"
MiB = 1 << 20


def make_file(folder: Path, size_mb: int) -> LocalFile:
    path = folder / "recording.bin"
    with open(path, "wb") as fh:
        fh.writelines(os.urandom(MiB) for _ in range(size_mb))
    hasher = hash_file(path)  # done by the download step in real runs: not timed
    return LocalFile(path=path, size=hasher.size, checksums=hasher.checksums())


def plain_upload(client, settings: S3Settings, file: LocalFile, key: str) -> float:
    config = TransferConfig(multipart_threshold=settings.multipart_threshold,
                            multipart_chunksize=settings.part_size,
                            max_concurrency=settings.max_concurrency, use_threads=True,
                            preferred_transfer_client="classic")
    start = time.perf_counter()
    client.upload_file(str(file.path), BUCKET, key, Config=config)
    return time.perf_counter() - start


def adapter_upload(target: S3Target, file: LocalFile, key: str) -> float:
    start = time.perf_counter()
    target.put(file, key)
    return time.perf_counter() - start


def run(size_mb: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rtk-bench-") as tmp:
        folder = Path(tmp)
        server = start_moto(folder)
        try:
            server.ensure_bucket(BUCKET)
            client = server.client()
            settings = S3Settings(name="bench", bucket=BUCKET, endpoint=server.endpoint,
                                  access_key=server.access_key, secret=server.secret)
            file = make_file(folder, size_mb)
            print(f"file {size_mb} MB, part {settings.part_size // MiB} MiB, "
                  f"threshold {settings.multipart_threshold // MiB} MiB, "
                  f"concurrency {settings.max_concurrency}, moto {server.endpoint}")
            plain, adapter = [], []
            with S3Target(settings) as target:
                for n in range(1, rounds + 1):
                    plain.append(plain_upload(client, settings, file, f"plain/{n}.bin"))
                    adapter.append(adapter_upload(target, file, f"adapter/{n}.bin"))
                    print(f"round {n}: boto3 upload_file {rate(size_mb, plain[-1]):7.1f} MB/s   "
                          f"S3Target.put {rate(size_mb, adapter[-1]):7.1f} MB/s")
                    # moto keeps objects: drop them so later rounds see the same server state.
                    client.delete_object(Bucket=BUCKET, Key=f"plain/{n}.bin")
                    client.delete_object(Bucket=BUCKET, Key=f"adapter/{n}.bin")
                report(size_mb, plain, adapter)
                direct_costs(target, file, "adapter/fixed-cost-probe.bin", statistics.mean(plain))
        finally:
            server.stop()


def rate(size_mb: int, seconds: float) -> float:
    return size_mb * MiB / 1e6 / seconds


def report(size_mb: int, plain: list[float], adapter: list[float]) -> None:
    for label, pick in (("mean", statistics.mean), ("best", min)):
        a, b = pick(plain), pick(adapter)
        print(f"{label}:    boto3 upload_file {rate(size_mb, a):7.1f} MB/s   "
              f"S3Target.put {rate(size_mb, b):7.1f} MB/s   "
              f"overhead {100 * (b / a - 1):+.1f} % ({b - a:+.2f} s per file)")


def direct_costs(target: S3Target, file: LocalFile, missing_key: str, plain_seconds: float) -> None:
    """The adapter's own extra work, timed alone: moto's round-to-round noise is larger than
    this, so the end-to-end overhead above mostly measures moto."""
    start = time.perf_counter()
    for _ in range(10):
        with contextlib.suppress(NotFound):  # a missing key is what put's stat usually sees
            target.stat(missing_key)
    head = (time.perf_counter() - start) / 10
    sha256, crc32 = digest_seconds(file, hashlib.sha256), digest_seconds(file, _Crc32)
    extra = 2 * head + (sha256 - crc32)  # stat before + stat after, SHA-256 instead of CRC32
    print(f"measured alone: HEAD {1000 * head:.1f} ms (x2 per put), SHA-256 {sha256:.2f} s vs "
          f"boto3's default CRC32 {crc32:.2f} s over the file -> {extra:.2f} s, "
          f"{100 * extra / plain_seconds:.1f} % of the mean plain upload")


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, chunk: bytes) -> None:
        self.value = zlib.crc32(chunk, self.value)


def digest_seconds(file: LocalFile, factory) -> float:
    start = time.perf_counter()
    digest = factory()
    with file.open() as fh:
        while chunk := fh.read(16 * MiB):
            digest.update(chunk)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run(args.size_mb, args.rounds)


if __name__ == "__main__":
    main()
