"""Benchmark (not a test): many small recordings (2-50 KB each) in one run: the overhead per
recording (ms, end to end: list, plan, download, hash, copy, verify, ledger, audit, manifest)
and the run's peak RSS, which must not grow with the number of recordings listed.

    python tests/bench/bench_many.py [--counts 10000 100000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.farm import Farm, archive_config, run_archive_child  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000])
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(11)
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-many-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {os.cpu_count()} cores")
    rows = []
    try:
        with Farm() as farm:
            for count in args.counts:
                recs = [farm.add_recording(rng.randint(2_000, 50_000)) for _ in range(count)]
                config = archive_config(farm, work / str(count), concurrency=args.concurrency, manifest=True)
                config["source"]["per_page"] = 1000
                result = run_archive_child(config)
                assert result["archived"] == count, result
                shutil.rmtree(work / str(count))
                farm.remove(recs)
                rows.append((count, 1000 * result["seconds"] / count, result["peak_rss_mb"], result["seconds"]))
                print(f"  {count:7d} recordings: {rows[-1][1]:6.2f} ms per recording, peak RSS {rows[-1][2]:6.1f} MB "
                      f"({rows[-1][3]:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
