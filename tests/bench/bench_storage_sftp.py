"""Benchmark: how much slower is SFTPTarget.put than plain tools, on the same local sshd?

Uploads one random file (200 MB by default) with
  (a) OpenSSH's own `sftp` client in batch mode,
  (b) plain paramiko `SFTPClient.put`,
  (c) `SFTPTarget.put` (temporary name, size check, rename, remote sha256sum), and
  (c0) the same with remote_checksum = false, to show what the server-side hash costs,
alternating the order each round, and prints MB/s (10^6 bytes) per method and the overhead
of (c) against (a) and (b). Every timing includes logging in, as each real upload would.

Run from the repository root, as root (it starts sshd and uses the test user):
    python tests/bench/bench_storage_sftp.py [--size-mb 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a plain script

import paramiko

from pipeline.archive.hashing import hash_file
from storage import LocalFile, build_target, settings_model
from tests.servers.sshd import SSHServer, start_sshd

REMOTE_FOLDER = "rtk-bench"


def make_source(folder: Path, size_mb: int) -> LocalFile:
    path = folder / "recording.bin"
    with open(path, "wb") as fh:
        fh.writelines(os.urandom(1_000_000) for _ in range(size_mb))
    hasher = hash_file(path)
    return LocalFile(path=path, size=hasher.size, checksums=hasher.checksums())


def with_openssh(server: SSHServer, source: LocalFile, name: str, workdir: Path) -> None:
    batch = workdir / "batch"
    batch.write_text(f"put {source.path} {REMOTE_FOLDER}/{name}\n")
    subprocess.run(
        ["sftp", "-q", "-b", str(batch), "-i", str(server.ed25519_key.path), "-P", str(server.port),
         "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"{server.user}@{server.host}"],
        check=True, capture_output=True,
    )


def with_paramiko(server: SSHServer, source: LocalFile, name: str, workdir: Path) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(server.host, server.port, server.user, key_filename=str(server.ed25519_key.path),
                   allow_agent=False, look_for_keys=False)
    try:
        with client.open_sftp() as sftp:
            sftp.put(str(source.path), f"{REMOTE_FOLDER}/{name}")
    finally:
        client.close()


def adapter(remote_checksum: bool) -> Callable[[SSHServer, LocalFile, str, Path], None]:
    def upload(server: SSHServer, source: LocalFile, name: str, workdir: Path) -> None:
        settings = settings_model("sftp").model_validate({
            "name": "bench", "type": "sftp", "host": server.host, "port": server.port,
            "username": server.user, "auth_method": "KEY", "private_key": server.ed25519_key.text,
            "known_hosts": str(server.known_hosts), "path": REMOTE_FOLDER,
            "remote_checksum": remote_checksum,
        })
        with build_target(settings) as target:
            stored = target.put(source, name)
        if remote_checksum and stored.sha256 != source.checksums.sha256:
            raise SystemExit(f"remote sha256 mismatch: {stored.sha256}")

    return upload


METHODS: dict[str, Callable[[SSHServer, LocalFile, str, Path], None]] = {
    "(a) openssh sftp -b": with_openssh,
    "(b) paramiko put": with_paramiko,
    "(c) SFTPTarget.put": adapter(remote_checksum=True),
    "(c0) SFTPTarget.put, no remote sha256": adapter(remote_checksum=False),
}


def run(size_mb: int, rounds: int) -> dict[str, list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="rtk-bench-"))
    server = start_sshd(workdir)
    folder = server.home / REMOTE_FOLDER
    try:
        source = make_source(workdir, size_mb)
        folder.mkdir(exist_ok=True)
        owner = server.home.stat()
        os.chown(folder, owner.st_uid, owner.st_gid)
        seconds: dict[str, list[float]] = {name: [] for name in METHODS}
        names = list(METHODS)
        for round_number in range(rounds):
            order = names[round_number % len(names):] + names[: round_number % len(names)]
            for method in order:
                remote = f"r{round_number}-{names.index(method)}.bin"
                started = time.perf_counter()
                METHODS[method](server, source, remote, workdir)
                seconds[method].append(time.perf_counter() - started)
                landed = folder / remote
                if landed.stat().st_size != source.size:
                    raise SystemExit(f"{method}: wrong size on the server")
                landed.unlink()  # keep the disk and page cache out of the next measurement
        return seconds
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def report(seconds: dict[str, list[float]], size_mb: int) -> None:
    rate = {name: [size_mb / s for s in runs] for name, runs in seconds.items()}
    median = {name: statistics.median(runs) for name, runs in seconds.items()}
    print(f"\n{size_mb} MB file, {len(next(iter(seconds.values())))} rounds, loopback, "
          f"{os.cpu_count()} CPUs")
    for name, values in rate.items():
        runs = ", ".join(f"{v:6.1f}" for v in values)
        print(f"  {name:40s} median {size_mb / median[name]:6.1f} MB/s   (rounds: {runs})")
    adapter_time = median["(c) SFTPTarget.put"]
    for base in ("(a) openssh sftp -b", "(b) paramiko put"):
        print(f"  overhead of (c) vs {base}: {100 * (adapter_time / median[base] - 1):+.0f}% time")
    no_hash = median["(c0) SFTPTarget.put, no remote sha256"]
    print(f"  overhead of (c0) vs (b) paramiko put: {100 * (no_hash / median['(b) paramiko put'] - 1):+.0f}% time;"
          f" remote sha256sum adds {adapter_time - no_hash:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    report(run(args.size_mb, args.rounds), args.size_mb)


if __name__ == "__main__":
    main()
