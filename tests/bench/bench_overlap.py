"""Benchmark (not a test): one large recording from the throttled simulator to an SFTP target
(the project's test sshd on this machine), with the upload overlapped with the download
(`[archive] overlap_cutoff` below the file's size) and not (above it), side by side in one run,
beside the two halves measured alone: the download (`rtk-archive run` to a local target on the
spool's file system, whose copy is a hard link) and the upload (SFTPTarget.put of the finished
file). Overlap should bring the whole run near max(download, upload) instead of their sum.

Run from the repository root, as root (it starts sshd and uses the test user):
    python tests/bench/bench_overlap.py [--size-mib 512] [--throttle-mib 64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.archive.hashing import hash_file  # noqa: E402
from storage import LocalFile, build_target, settings_model  # noqa: E402
from tests.bench.farm import Farm, archive_config, run_archive_child  # noqa: E402
from tests.servers.sshd import start_sshd  # noqa: E402

REMOTE_FOLDER = "rtk-bench-overlap"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--throttle-mib", type=float, default=64, help="MiB/s per file connection")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-overlap-", dir=os.environ.get("BENCH_DIR")))
    (work / "sshd-log").mkdir()
    server = start_sshd(work / "sshd-log")
    sftp = {"name": "sftp", "type": "sftp", "host": server.host, "port": server.port, "username": server.user,
            "auth_method": "KEY", "private_key": server.ed25519_key.text, "known_hosts": str(server.known_hosts),
            "path": REMOTE_FOLDER}
    one_stream = {"streams_per_file": 1, "concurrency": 1}
    print(f"machine: {os.cpu_count()} cores (shared: figures are noisy); one file of {args.size_mib} MiB, "
          f"the file connection throttled to {args.throttle_mib} MiB/s, to SFTP on this machine")
    seconds: dict[str, list[float]] = {}
    try:
        with Farm() as farm:
            farm.set_faults(throttle_bps=int(args.throttle_mib * (1 << 20)))
            for _ in range(args.rounds):
                runs = {
                    "download alone": ([{"name": "here", "type": "local", "path": str(work / "archive" / "here")}],
                                       {"overlap_cutoff": 1 << 62}),
                    "to sftp, overlap off": ([sftp], {"overlap_cutoff": 1 << 62}),
                    "to sftp, overlap on": ([sftp], {"overlap_cutoff": 1 << 20}),
                }
                for name, (targets, settings) in runs.items():
                    rec = farm.add_recording(size)
                    os.sync()
                    result = run_archive_child(archive_config(farm, work / "archive", targets=targets,
                                                              **one_stream, **settings))
                    assert result["archived"] == 1, result
                    seconds.setdefault(name, []).append(result["seconds"])
                    if name == "download alone":  # the finished file, for the upload alone
                        seconds.setdefault("upload alone", []).append(upload_alone(sftp, work / "archive" / "here"))
                    farm.remove([rec])
                    shutil.rmtree(work / "archive")
                    shutil.rmtree(server.home / REMOTE_FOLDER, ignore_errors=True)
        best = {name: min(values) for name, values in seconds.items()}
        limit = max(best["download alone"], best["upload alone"])
        total = best["download alone"] + best["upload alone"]
        for name in ("download alone", "upload alone", "to sftp, overlap off", "to sftp, overlap on"):
            print(f"  {name:22s}: {best[name]:7.2f} s  ({best[name] / limit:4.2f}x max(download, upload), "
                  f"{best[name] / total:4.2f}x their sum)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def upload_alone(settings: dict, folder: Path) -> float:
    """SFTPTarget.put of the file the download-alone run archived (logging in included)."""
    [path] = [p for p in folder.rglob("video-*") if p.is_file()]
    hasher = hash_file(path)
    file = LocalFile(path=path, size=hasher.size, checksums=hasher.checksums())
    target = build_target(settings_model("sftp")(**settings))
    try:
        start = time.perf_counter()
        target.put(file, "upload-alone/" + path.name)
        return time.perf_counter() - start
    finally:
        target.close()


if __name__ == "__main__":
    main()
