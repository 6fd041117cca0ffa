"""Benchmark (not a test): many small recordings (2-50 KB each) in one run: the overhead per
recording (ms, end to end: list, plan, download, hash, copy, verify, ledger, audit, manifest),
the CPU time rtk-archive's own process spent per recording (user + system: what a shared or
busy machine does not distort much), the simulator's CPU per recording (a process of its own,
not rtk-archive's), and the rtk-archive process's peak RSS, which must not grow with the number
of recordings listed. One row per count, side by side from one run.

    python tests/bench/bench_many.py [--counts 10000 100000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.farm import Farm, archive_config  # noqa: E402

# The run in a fresh interpreter: wall seconds, its own CPU seconds, its peak RSS.
_CHILD = (f"import json,os,sys; sys.path.insert(0, {str(REPO)!r}); "
          "from tests.bench.bench_archive import child_archive; spec = json.loads(sys.stdin.read()); "
          "before = os.times(); r = child_archive(spec); after = os.times(); "
          "r['cpu_seconds'] = (after.user - before.user) + (after.system - before.system); "
          # VmHWM: this process's own peak (ru_maxrss would keep the forking parent's size across exec)
          "r['peak_rss_mb'] = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))) / 1024; "
          "print(json.dumps(r))")


def simulator_cpu_seconds(farm: Farm) -> float:
    fields = Path(f"/proc/{farm.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(farm: Farm, work: Path, count: int, concurrency: int, rng: random.Random) -> dict:
    recs = [{"id": farm.add_recording(rng.randint(2_000, 50_000))["id"]} for _ in range(count)]
    config = archive_config(farm, work / str(count), concurrency=concurrency, manifest=True)
    config["source"]["per_page"] = 1000
    os.sync()  # start from a synced disk: the previous run's dirty pages would slow this one
    simulator_before = simulator_cpu_seconds(farm)
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps({"config": config}), capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"rtk-archive child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    simulator = simulator_cpu_seconds(farm) - simulator_before
    assert result["archived"] == count, result
    shutil.rmtree(work / str(count))
    farm.remove(recs)
    return {"count": count, "ms": 1000 * result["seconds"] / count, "cpu_ms": 1000 * result["cpu_seconds"] / count,
            "sim_cpu_ms": 1000 * simulator / count, "rss": result["peak_rss_mb"], "seconds": result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000])
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(11)
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-many-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; "
          f"concurrency {args.concurrency}")
    rows = []
    try:
        with Farm() as farm:
            for count in args.counts:
                rows.append(measure(farm, work, count, args.concurrency, rng))
                row = rows[-1]
                print(f"  {count:7d} recordings: {row['ms']:5.2f} ms per recording (wall), rtk-archive CPU "
                      f"{row['cpu_ms']:5.2f} ms, simulator CPU {row['sim_cpu_ms']:4.2f} ms, rtk-archive peak RSS "
                      f"{row['rss']:6.1f} MB ({row['seconds']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n  recordings | ms/recording | rtk CPU ms/recording | peak RSS MB")
    for row in rows:
        print(f"  {row['count']:10d} | {row['ms']:12.2f} | {row['cpu_ms']:20.2f} | {row['rss']:11.1f}")


if __name__ == "__main__":
    main()
