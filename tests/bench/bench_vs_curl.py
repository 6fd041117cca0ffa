"""Benchmark (not a test): `rtk-archive run` to a local target against sequential curl, the
plain-download limit on this machine, on the issue's workload (one large file and several
medium ones, served by the simulator), plus the raw readers side by side on the large file
(curl, urllib3 `readinto` a preallocated buffer, httpx `iter_raw`), and the least an archiver
does with public tools (curl through tee into `openssl dgst -sha256`, then sync), and curl then
sync alone (what durability costs: rtk-archive never calls a file archived before it is on disk).

The simulator runs in a process of its own (so it never shares a GIL with what is measured);
each rtk-archive run is a child process (its peak RSS is its own). Every figure printed is
measured in this run: compare the lines of one run, as ratios.

    python tests/bench/bench_vs_curl.py [--large-mib 1024] [--medium 8] [--medium-mib 64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.farm import Farm, archive_config, run_archive_child  # noqa: E402


def curl_all(urls: list[str], folder: Path, *, sync: bool = False) -> float:
    """Seconds for curl to fetch every URL, one after another, to files; with `sync`, each file
    is also synced to disk (`sync -d`) before the next: what durability alone costs."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index, url in enumerate(urls):
        subprocess.run(["curl", "-sf", "-o", str(folder / f"{index}.bin"), url], check=True)
        if sync:
            subprocess.run(["sync", "-d", str(folder / f"{index}.bin")], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds


def floor_all(urls: list[str], folder: Path) -> float:
    """Seconds for the least an archiver does, with public tools, one file after another: curl
    piped through tee to the file and into `openssl dgst -sha256` (OpenSSL's SHA-256, as
    hashlib's), then the file synced to disk. No second copy, no verification, no ledger."""
    if shutil.which("openssl") is None:
        raise SystemExit("openssl is needed for the floor line (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index, url in enumerate(urls):
        path = folder / f"{index}.bin"
        subprocess.run(f"set -o pipefail; curl -sf '{url}' | tee '{path}' | openssl dgst -sha256 >/dev/null "
                       f"&& sync -d '{path}'", shell=True, executable="/bin/bash", check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds


def readers(url: str, size: int) -> dict[str, float]:
    """MB/s of each raw reader on one URL (no disk, no hashing): what the byte path costs."""
    import httpx
    import urllib3

    out = {}
    start = time.perf_counter()
    subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
    out["curl"] = time.perf_counter() - start
    pool = urllib3.PoolManager()
    buffer = memoryview(bytearray(1 << 20))
    start = time.perf_counter()
    response = pool.request("GET", url, preload_content=False)
    while response.readinto(buffer):
        pass
    out["urllib3 readinto 1 MiB buffer"] = time.perf_counter() - start
    start = time.perf_counter()
    with httpx.Client(timeout=60) as client, client.stream("GET", url) as answer:
        for _ in answer.iter_raw():
            pass
    out["httpx stream iter_raw"] = time.perf_counter() - start
    return {name: size / seconds / 1e6 for name, seconds in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--medium", type=int, default=8)
    parser.add_argument("--medium-mib", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--also-streams", type=int, default=1,
                        help="also run rtk-archive with this streams_per_file (default 1: one stream per file; "
                             "0: skip), to compare with the default's ranged download of the large file")
    args = parser.parse_args()
    sizes = [args.large_mib << 20] + [(args.medium_mib << 20) + i * 4096 for i in range(args.medium)]
    total = sum(sizes)
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-curl-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {os.cpu_count()} cores; {len(sizes)} files, {total / 1e6:.0f} MB per round")
    try:
        with Farm() as farm:
            for round_no in range(args.rounds):
                recs = [farm.add_recording(size) for size in sizes]
                urls = [farm.download_url(rec["id"]) for rec in recs]
                for name, rate in readers(urls[0], sizes[0]).items():
                    print(f"  reader {name:32s}: {rate:7.0f} MB/s (the {sizes[0] >> 20} MiB file, no disk)")
                os.sync()
                curl_seconds = curl_all(urls, work / "curl")
                os.sync()
                synced_seconds = curl_all(urls, work / "curl-sync", sync=True)
                os.sync()
                floor_seconds = floor_all(urls, work / "floor")
                os.sync()
                runs = [("defaults", {})]
                if args.also_streams:
                    runs.append((f"streams_per_file={args.also_streams}", {"streams_per_file": args.also_streams}))
                if round_no % 2:
                    runs.reverse()  # the order alternates between rounds
                results = []
                for name, extra in runs:
                    folder = work / f"archive-{round_no}-{len(results)}"
                    config = archive_config(farm, folder, concurrency=args.concurrency, **extra)
                    os.sync()
                    results.append((name, run_archive_child(config)))
                    shutil.rmtree(folder)
                farm.remove(recs)
                curl_rate = total / curl_seconds / 1e6
                print(f"round {round_no + 1}: curl, sequential     : {curl_rate:7.0f} MB/s")
                synced_rate = total / synced_seconds / 1e6
                print(f"round {round_no + 1}: curl, then sync, sequential: {synced_rate:7.0f} MB/s "
                      f"({synced_rate / curl_rate:.2f}x curl: what making the bytes durable costs)")
                floor_rate = total / floor_seconds / 1e6
                print(f"round {round_no + 1}: curl | tee | openssl sha256, then sync, sequential: {floor_rate:7.0f} MB/s "
                      f"({floor_rate / curl_rate:.2f}x curl: the least an archiver does)")
                for name, result in results:
                    rate = result["bytes"] / result["process_seconds"] / 1e6
                    print(f"round {round_no + 1}: rtk-archive run, local, {name}: {rate:7.0f} MB/s  "
                          f"({rate / curl_rate:.2f}x curl), peak RSS {result['peak_rss_mb']:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
