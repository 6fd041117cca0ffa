"""A throw-away PostgreSQL cluster for the tests: initdb in a temporary folder, started with
pg_ctl on a free loopback port (as the `postgres` user when we are root: PostgreSQL refuses to
run as root), fsync off, stopped and removed at the end. The binaries are found on PATH, in
/usr/local/bin, or where Debian's `postgresql` package puts them (tests/run installs it when
none is found). Nothing skips: a cluster that cannot start fails the tests that need it, loudly."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import free_port


def pg_bin(name: str) -> str:
    candidates = [shutil.which(name), f"/usr/local/bin/{name}",
                  *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"PostgreSQL's {name} not found (tests/run installs Debian's postgresql package)")


@dataclass
class PostgresCluster:
    folder: Path
    port: int
    as_user: list[str]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:secret-pw@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database (one per test), returned as its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _pg_ctl(self, *args: str) -> None:
        done = subprocess.run([*self.as_user, pg_bin("pg_ctl"), "-D", str(self.folder / "data"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)}: exit {done.returncode}: {done.stdout.strip()}")

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    """A new cluster in a folder of its own under the system's temporary folder (not pytest's,
    whose folders only their owner may enter)."""
    folder = Path(tempfile.mkdtemp(prefix="rtk-archive-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    password_file = folder / "pw"
    password_file.write_text("secret-pw\n")
    if as_user:
        shutil.chown(password_file, "postgres", "postgres")
    subprocess.run([*as_user, pg_bin("initdb"), "-D", str(folder / "data"), "-U", "postgres", "-A", "scram-sha-256",
                    "--pwfile", str(password_file), "-E", "UTF8", "--no-locale", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    port = free_port()
    cluster = PostgresCluster(folder, port, as_user)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
    try:
        cluster._pg_ctl("-l", str(folder / "log"), "-w", "-t", "120", "-o", options, "start")
    except RuntimeError as exc:
        log = (folder / "log").read_text(errors="replace")[-2000:] if (folder / "log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc} {log}") from None
    return cluster
