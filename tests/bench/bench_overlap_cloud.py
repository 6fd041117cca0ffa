"""Benchmark: overlapped upload (issue 11) into S3 (moto) and Azure (Azurite), against the put
that waits for the download to end.

    python tests/bench/bench_overlap_cloud.py [--size-mb 256] [--rate-mb 64] [--rounds 1]

Starts moto and Azurite on 127.0.0.1 and writes one random file. A download is stood in for by
tests/storage/growing.py's GrowingSource, released from a thread at `--rate-mb` MiB/s (its last
byte only at the end, as the pipeline releases it once verified). Per backend and round, in an
order that rotates:
  (a) put after the download: wait for the whole file, then `put` (the time from the first
      byte released to the object stored);
  (b) overlapped: `put_growing` from the first byte on;
and, for reference, the download alone (size / rate) and the upload alone (`put` of the
complete file). Overlapping should bring (b) towards max(download, upload) from their sum (a).
Both (a) and (b) include the stand-in's verification at the end (it hashes the whole file when
the last byte is released, where the pipeline hashes as the bytes arrive): it adds the same to
both columns.
Each object is removed after its round. Whole seconds, side by side from one run: the machine is
shared and the servers are local emulators, so compare the columns of one run, never across runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import build_target, settings_model  # noqa: E402
from tests.servers.azurite import running_azurite  # noqa: E402
from tests.servers.moto import start_moto  # noqa: E402
from tests.storage.growing import GrowingSource  # noqa: E402

MiB = 1 << 20
BUCKET = "rtk-bench-overlap"
CONTAINER = "bench-overlap"


@contextlib.contextmanager
def s3_target(folder: Path):
    server = start_moto(folder)
    try:
        server.ensure_bucket(BUCKET)
        raw = {"name": "bench-s3", "type": "aws", "bucket": BUCKET, "endpoint": server.endpoint,
               "access_key": server.access_key, "secret": server.secret, "path": "overlap"}
        with build_target(settings_model("aws").model_validate(raw)) as target:
            yield target
    finally:
        server.stop()


@contextlib.contextmanager
def azure_target(folder: Path):
    from azure.storage.blob import BlobServiceClient

    with running_azurite(folder) as server:
        with BlobServiceClient.from_connection_string(server.connection_string) as service:
            service.get_container_client(CONTAINER).create_container()
        raw = {"name": "bench-azure", "type": "azure", "access_key": server.connection_string,
               "bucket": CONTAINER, "path": "overlap"}
        with build_target(settings_model("azure").model_validate(raw)) as target:
            yield target


def put_after_download(target, path: Path, rate: float, key: str) -> float:
    source = GrowingSource(path)
    start = time.perf_counter()
    source.feed(rate)
    target.put(source.result(), key)
    return time.perf_counter() - start


def overlapped(target, path: Path, rate: float, key: str) -> float:
    source = GrowingSource(path)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        start = time.perf_counter()
        running = pool.submit(target.put_growing, source, key)
        source.feed(rate)
        stored = running.result()
    elapsed = time.perf_counter() - start
    if not target.capabilities.overlapped_upload or stored.size != source.size:
        raise SystemExit(f"{target.name}: not an overlapped upload of the whole file")
    return elapsed


def upload_alone(target, path: Path, _rate: float, key: str) -> float:
    source = GrowingSource(path)
    source.finish()
    file = source.result()
    start = time.perf_counter()
    target.put(file, key)
    return time.perf_counter() - start


VARIANTS = {"put after download": put_after_download, "overlapped": overlapped, "upload alone": upload_alone}


def run(target, path: Path, rate: float, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for round_number in range(rounds):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in order:
            key = f"round-{round_number}/{name.replace(' ', '-')}.bin"
            times[name].append(VARIANTS[name](target, path, rate, key))
            target.remove(key)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rate-mb", type=float, default=64.0, help="the stand-in download's rate, MiB/s")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backends", default="s3,azure")
    args = parser.parse_args()
    rate = args.rate_mb * MiB
    with tempfile.TemporaryDirectory(prefix="rtk-bench-overlap-") as tmp:
        folder = Path(tmp)
        path = GrowingSource.of(folder, args.size_mb * MiB, "bench.bin").path
        print(f"{args.size_mb} MiB file, download stood in for at {args.rate_mb:g} MiB/s "
              f"({args.size_mb / args.rate_mb:.0f} s alone), {args.rounds} round(s); median seconds:")
        print(f"{'backend':<8} {'download alone':>15} {'upload alone':>13} {'put after download':>19} "
              f"{'overlapped':>11} {'saved':>6}")
        backends = {"s3": s3_target, "azure": azure_target}
        for name in args.backends.split(","):
            (folder / name).mkdir()
            with backends[name](folder / name) as target:
                times = {variant: statistics.median(values)
                         for variant, values in run(target, path, rate, args.rounds).items()}
            saved = 1 - times["overlapped"] / times["put after download"]
            print(f"{name:<8} {args.size_mb / args.rate_mb:>15.0f} {times['upload alone']:>13.0f} "
                  f"{times['put after download']:>19.0f} {times['overlapped']:>11.0f} {saved:>6.0%}")


if __name__ == "__main__":
    main()
