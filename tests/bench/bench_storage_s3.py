"""Benchmark: what the S3 adapter costs on top of a plain boto3 upload.

Run from the repository root:  python tests/bench/bench_storage_s3.py [--size-mb 200] [--rounds 3]

Starts its own moto server, writes one random file, then, round after round:
  (a) boto3 `upload_file` with the same TransferConfig as the adapter (boto3's defaults for
      everything else, i.e. its default CRC32 request checksum);
  (a+) the same with the adapter's integrity check (`ChecksumAlgorithm=SHA256`): the same work
      on the bytes as the adapter;
  (b) `S3Target.put` (stat before put, SHA-256 request checksum, metadata, If-None-Match,
      stat after put).
The order of the three rotates from round to round, so drift of the server (memory, disk
cache) and whichever goes first are spread over all of them. Then it times the adapter's own
extra work alone (a HEAD, SHA-256 and CRC32 over the file) and prints the adapter's cost
estimated from those parts (labelled as an estimate). moto, not the network, bounds these
figures: compare the columns of one run, never against another day's run.
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

from pipeline.archive.hashing import hash_file
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


def plain_upload(client, settings: S3Settings, file: LocalFile, key: str, *, sha256: bool = False) -> float:
    config = TransferConfig(multipart_threshold=settings.multipart_threshold,
                            multipart_chunksize=settings.part_size,
                            max_concurrency=settings.max_concurrency, use_threads=True,
                            preferred_transfer_client="classic")
    extra = {"ChecksumAlgorithm": "SHA256"} if sha256 else None
    start = time.perf_counter()
    client.upload_file(str(file.path), BUCKET, key, Config=config, ExtraArgs=extra)
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
            with S3Target(settings) as target:
                uploads = {
                    "plain": lambda key: plain_upload(client, settings, file, key),
                    "plain+sha256": lambda key: plain_upload(client, settings, file, key, sha256=True),
                    "adapter": lambda key: adapter_upload(target, file, key),
                }
                times: dict[str, list[float]] = {name: [] for name in uploads}
                names = list(uploads)
                for n in range(1, rounds + 1):
                    order = names[(n - 1) % len(names):] + names[:(n - 1) % len(names)]
                    for name in order:
                        key = f"{name}/{n}.bin"
                        times[name].append(uploads[name](key))
                        # moto keeps objects: drop them so later uploads see the same server state.
                        client.delete_object(Bucket=BUCKET, Key=key)
                    print(f"round {n} (order: {', '.join(order)}): "
                          + "   ".join(f"{name} {rate(size_mb, times[name][-1]):7.1f} MB/s" for name in names))
                report(size_mb, times)
                direct_costs(target, file, "adapter/fixed-cost-probe.bin", statistics.mean(times["plain"]))
        finally:
            server.stop()


def rate(size_mb: int, seconds: float) -> float:
    return size_mb * MiB / 1e6 / seconds


def report(size_mb: int, times: dict[str, list[float]]) -> None:
    for label, pick in (("mean", statistics.mean), ("best", min)):
        adapter = pick(times["adapter"])
        line = "   ".join(f"{name} {rate(size_mb, pick(values)):7.1f} MB/s" for name, values in times.items())
        print(f"{label} (measured): {line}")
        for base in ("plain", "plain+sha256"):
            a = pick(times[base])
            print(f"    adapter vs {base}: {100 * (adapter / a - 1):+.1f} % ({adapter - a:+.2f} s per file)")


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
    print(f"measured alone: HEAD {1000 * head:.1f} ms, SHA-256 {sha256:.2f} s and boto3's default CRC32 "
          f"{crc32:.2f} s over the file")
    print(f"estimated from those parts (not measured as a whole): the adapter's extra work "
          f"(2 HEADs + SHA-256 instead of CRC32) {extra:.2f} s, {100 * extra / plain_seconds:.1f} % of the mean "
          "plain upload")


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
