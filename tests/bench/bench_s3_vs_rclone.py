"""Benchmark (not a test): end to end into S3 (a moto server with bucket versioning on),
`rtk-archive run` against `rclone copyurl` run 4 at once into the same server (Debian's rclone,
installed from apt if missing). moto answers an upload into an unversioned bucket with the
version id `null`, which rclone then cannot HEAD: versioning is switched on. rclone refuses a CA
bundle on plain http, so AWS_CA_BUNDLE is unset for it.

Besides each rate it prints the CPU seconds each side cost: the tool's own (rclone's four
processes, or the rtk-archive process), moto's and the simulator's. moto, a Python server on the
same cores, is the limit here: its CPU per byte says how much work each tool's requests make it
do, and stays meaningful when another job on the machine makes the wall time noisy.

    python tests/bench/bench_s3_vs_rclone.py [--large-mib 256] [--medium 4] [--medium-mib 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_wan import ensure  # noqa: E402
from tests.bench.farm import Farm, archive_config, run_archive_child  # noqa: E402
from tests.servers.moto import start_moto  # noqa: E402

BUCKET = "rtk-bench-rclone"
MiB = 1 << 20


def cpu_seconds(pid: int) -> float:
    """A running process's CPU time so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's finished (waited-for) children."""
    times = os.times()
    return times.children_user + times.children_system


def rclone_all(urls: list[str], moto, prefix: str) -> float:
    env = {key: value for key, value in os.environ.items() if key != "AWS_CA_BUNDLE"}
    env.update(RCLONE_CONFIG_MOTO_TYPE="s3", RCLONE_CONFIG_MOTO_PROVIDER="Other",
               RCLONE_CONFIG_MOTO_ENDPOINT=moto.endpoint, RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=moto.access_key,
               RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=moto.secret, RCLONE_CONFIG_MOTO_REGION="us-east-1",
               RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE="true")

    def copy(item):
        index, url = item
        subprocess.run(["rclone", "copyurl", url, f"moto:{BUCKET}/{prefix}/{index}.bin"], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(copy, enumerate(urls)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--medium", type=int, default=4)
    parser.add_argument("--medium-mib", type=int, default=64)
    args = parser.parse_args()
    ensure("rclone", "rclone")
    sizes = [args.large_mib << 20] + [(args.medium_mib << 20) + i * 4096 for i in range(args.medium)]
    total = sum(sizes)
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-s3-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {os.cpu_count()} cores; {len(sizes)} files, {total / 1e6:.0f} MB, into moto (versioning on)")
    moto = start_moto(work)
    try:
        client = moto.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        rates = {}
        with Farm() as farm:
            for name in ("rclone copyurl, 4 at once", "rtk-archive run"):
                recs = [farm.add_recording(size) for size in sizes]
                moto_before, farm_before = cpu_seconds(moto.process.proc.pid), cpu_seconds(farm.proc.pid)
                if name.startswith("rclone"):
                    children_before = children_cpu_seconds()
                    seconds = rclone_all([farm.download_url(rec["id"]) for rec in recs], moto, "rclone")
                    own_cpu = children_cpu_seconds() - children_before
                else:
                    target = {"name": "s3", "type": "aws", "bucket": BUCKET, "endpoint": moto.endpoint,
                              "region": "us-east-1", "access_key": moto.access_key, "secret": moto.secret,
                              "path": "rtk"}
                    result = run_archive_child(archive_config(farm, work / "archive", targets=[target], concurrency=4))
                    if result["archived"] != len(recs):  # a rate of a run that stored less says nothing
                        raise SystemExit(f"rtk-archive archived {result['archived']} of {len(recs)} recordings")
                    seconds, own_cpu = result["process_seconds"], result["cpu_seconds"]
                moto_cpu = cpu_seconds(moto.process.proc.pid) - moto_before
                farm_cpu = cpu_seconds(farm.proc.pid) - farm_before
                rates[name] = total / seconds / 1e6
                farm.remove(recs)
                print(f"  {name:28s}: {rates[name]:7.0f} MB/s ({seconds:.2f} s); CPU s: own {own_cpu:.2f}, "
                      f"moto {moto_cpu:.2f} ({moto_cpu / (total / MiB) * 1000:.1f} ms/MiB), simulator {farm_cpu:.2f}",
                      flush=True)
        print(f"  rtk-archive / rclone: {rates['rtk-archive run'] / rates['rclone copyurl, 4 at once']:.2f}x")
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
