"""Benchmark (not a test): a long network path, modelled by throttling every file connection of
the simulator on its own (`simulate --throttle-per-connection`: one TCP stream over a WAN is
limited by window / round-trip time, not by the machine). Side by side in one run: curl (one
stream per file, one file after another), aria2c with 8 connections per file and 4 files at
once (`-x8 -s8 -j4`, Debian's aria2, installed from apt if missing), and `rtk-archive run` to a
local target with its defaults (streams ramped up while they pay) and with every stream opened
at once (`ramp_streams = false`). Every figure is a whole process's (rtk-archive's interpreter
start and imports included).

    python tests/bench/bench_wan.py [--throttle-mib 48] [--large-mib 512] [--medium 8] [--medium-mib 64]
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

from tests.bench.bench_vs_curl import curl_all  # noqa: E402
from tests.bench.farm import Farm, archive_config, run_archive_child  # noqa: E402


def ensure(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def aria2c_all(urls: list[str], folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "urls.txt"
    listing.write_text("".join(f"{url}\n  out={index}.bin\n" for index, url in enumerate(urls)))
    start = time.perf_counter()
    subprocess.run(["aria2c", "-q", "-x8", "-s8", "-j4", "-k1M", "--file-allocation=none", "-d", str(folder),
                    "-i", str(listing)], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throttle-mib", type=float, default=48, help="MiB/s per connection")
    parser.add_argument("--large-mib", type=int, default=512)
    parser.add_argument("--medium", type=int, default=8)
    parser.add_argument("--medium-mib", type=int, default=64)

    args = parser.parse_args()
    ensure("aria2c", "aria2")
    sizes = [args.large_mib << 20] + [(args.medium_mib << 20) + i * 4096 for i in range(args.medium)]
    total = sum(sizes)
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-wan-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {os.cpu_count()} cores; {len(sizes)} files, {total / 1e6:.0f} MB; each connection "
          f"throttled to {args.throttle_mib} MiB/s")
    rates = {}
    try:
        with Farm() as farm:
            farm.set_faults(throttle_bps=int(args.throttle_mib * (1 << 20)))
            runs = {
                "curl, sequential": None,
                "aria2c -x8 -s8 -j4": None,
                "rtk-archive, defaults": {},
                "rtk-archive, all streams at once": {"ramp_streams": False},
            }
            for name, settings in runs.items():
                recs = [farm.add_recording(size) for size in sizes]
                urls = [farm.download_url(rec["id"]) for rec in recs]
                os.sync()
                if name.startswith("curl"):
                    rates[name] = total / curl_all(urls, work / "curl") / 1e6
                elif name.startswith("aria2c"):
                    rates[name] = total / aria2c_all(urls, work / "aria2c") / 1e6
                else:
                    result = run_archive_child(archive_config(farm, work / "archive", concurrency=4, **settings))
                    shutil.rmtree(work / "archive")
                    rates[name] = result["bytes"] / result["process_seconds"] / 1e6
                farm.remove(recs)
                print(f"  {name:44s}: {rates[name]:7.0f} MB/s", flush=True)
        aria = rates["aria2c -x8 -s8 -j4"]
        for name, rate in rates.items():
            print(f"  {name:44s}: {rate / aria:5.2f}x aria2c")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
