"""Benchmark (not a test): archive throughput and peak RSS beside a plain download.

Starts the simulator in this process, then, each in its own child process (so its peak RSS
is its own): a plain httpx download of the same files to disk that does the same work on the
bytes as the tool (SHA-256 and CRC32C of every byte, MD5 too when the tool computes it, and an
fsync of each file before it counts as done): the baseline; and a full `rtk-archive` run to a
local target (download, hash, copy, verify, ledger, manifest). The two alternate which goes
first from round to round, so neither always meets a disk still busy with the other's pages.
Two workloads: many small-to-medium files, and one large file (2 GiB by default). Every figure
printed is measured in this run; compare the two lines of one run, not runs of other days.

    python tests/bench/bench_archive.py [--many 40] [--many-size 8] [--large-gib 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from storage import settings_model  # noqa: E402


# --------------------------------------------------------------------------- children


def child_plain(spec: dict) -> dict:
    """Download every URL to a file with httpx streaming, hashing as the bytes arrive and
    fsyncing the file at the end: what a careful script would do, and the same work on the
    bytes as the tool's download (which also hashes every byte and syncs its spool)."""
    import hashlib

    import google_crc32c
    import httpx

    out = Path(spec["dir"])
    out.mkdir(parents=True, exist_ok=True)

    def fetch(item):
        index, url = item
        digests = [hashlib.sha256(), google_crc32c.Checksum()] + ([hashlib.md5()] if spec["md5"] else [])
        with httpx.Client(timeout=60) as client, client.stream("GET", url) as response:
            response.raise_for_status()
            with open(out / f"{index}.bin", "wb") as fh:
                for chunk in response.iter_raw():
                    fh.write(chunk)
                    for digest in digests:
                        digest.update(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        for digest in digests:
            digest.digest()
        return (out / f"{index}.bin").stat().st_size

    start = time.perf_counter()
    with ThreadPoolExecutor(spec["concurrency"]) as pool:
        total = sum(pool.map(fetch, enumerate(spec["urls"])))
    return {"bytes": total, "seconds": time.perf_counter() - start}


def child_archive(spec: dict) -> dict:
    from pipeline.config import parse_config
    from pipeline.session import run_archive

    config = parse_config(spec["config"], environ={})
    start = time.perf_counter()
    result = run_archive(config, command="bench")
    seconds = time.perf_counter() - start
    summary = result.summary
    assert summary.failed == 0 and summary.lost == 0, summary.problems
    return {"bytes": summary.bytes_downloaded, "seconds": seconds, "archived": summary.archived}


def run_child(kind: str, spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; add its peak RSS."""
    code = (f"import json,sys,resource; sys.path.insert(0, {str(REPO)!r}); "
            f"from tests.bench.bench_archive import child_{kind}; "
            f"r = child_{kind}(json.loads(sys.stdin.read())); "
            "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "print(json.dumps(r))")
    # Start every measurement from a synced disk: the previous one's dirty pages being written
    # back would otherwise slow whichever runs next.
    os.sync()
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def workload(sim, work: Path, name: str, sizes: list[int], concurrency: int, round_no: int) -> dict:
    recs = [sim.add_recording(size=size) for size in sizes]
    ids = {r["id"] for r in recs}
    urls = [sim.download_url(r["id"]) for r in recs]
    base = work / f"{name}-{round_no}"
    run_dir = base / "archive"
    config = {
        "source": {"account_id": sim.account_id, "app_id": sim.app_id, "api_token": sim.token,
                   "base_url": sim.base_url},
        "ledger": {"path": str(run_dir / "ledger.db")},
        "archive": {"spool_dir": str(run_dir / "spool"), "concurrency": concurrency},
        "audit": {"path": str(run_dir / "audit.jsonl")},
        "targets": [{"name": "bench", "type": "local", "path": str(run_dir / "target")}],
    }
    # The tool computes MD5 only when a configured target checks it: the baseline does the same.
    md5 = any(settings_model(t["type"]).capabilities.uses_md5 for t in config["targets"])
    specs = {"plain": {"urls": urls, "dir": str(base / "plain"), "concurrency": concurrency, "md5": md5},
             "archive": {"config": config}}
    order = ["plain", "archive"] if round_no % 2 == 0 else ["archive", "plain"]
    results = {}
    for kind in order:
        results[kind] = run_child(kind, specs[kind])
        shutil.rmtree(base / kind)  # each starts with the other's files gone
    shutil.rmtree(base)
    for rid in ids:  # keep the next round's listing to its own files
        sim.remove_recording(rid)
    return {"plain": results["plain"], "archive": results["archive"], "first": order[0]}


def report(name: str, results: list[dict]) -> None:
    def mbps(r):
        return r["bytes"] / r["seconds"] / 1e6

    plain = [mbps(r["plain"]) for r in results]
    arch = [mbps(r["archive"]) for r in results]
    best_plain, best_arch = max(plain), max(arch)
    print(f"\n{name}: {results[0]['plain']['bytes'] / 1e6:.0f} MB per round, {len(results)} round(s); "
          f"first each round: {', '.join(r['first'] for r in results)}")
    print(f"  plain download + SHA-256 + CRC32C + fsync: {' '.join(f'{v:7.1f}' for v in plain)} MB/s   "
          f"peak RSS {max(r['plain']['peak_rss_mb'] for r in results):6.1f} MB")
    print(f"  rtk-archive run to a local target       : {' '.join(f'{v:7.1f}' for v in arch)} MB/s   "
          f"peak RSS {max(r['archive']['peak_rss_mb'] for r in results):6.1f} MB")
    print(f"  archive / plain (best of each): {100 * best_arch / best_plain:.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--many", type=int, default=40, help="number of files in the many-files workload")
    parser.add_argument("--many-size", type=float, default=8, help="MB per file in the many-files workload")
    parser.add_argument("--large-gib", type=float, default=2, help="size of the single large file, GiB")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from pipeline.simulator import Simulator

    work = Path(tempfile.mkdtemp(prefix="rtk-bench-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {os.cpu_count()} cores; work dir {work}")
    try:
        with Simulator(recordings=0, seed=11) as sim:
            many = [int(args.many_size * 1e6) + i * 4096 for i in range(args.many)]
            large = [int(args.large_gib * (1 << 30))]
            results = {"many files": [], "one large file": []}
            for round_no in range(args.rounds):
                results["many files"].append(workload(sim, work, "many", many, args.concurrency, round_no))
                results["one large file"].append(workload(sim, work, "large", large, 1, round_no))
        for name, rows in results.items():
            report(name, rows)
        print(f"\nbenchmark process (simulator) peak RSS: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
