"""The SFTP rig: a real OpenSSH sshd (tests/servers/sshd.py), one per test session.

The server is on this machine, so the rig looks behind the adapter's back through the file
system of the test user's home, as root. Each session works in its own folder of that home,
removed at the end, so reruns with the reused test user start clean."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from tests.servers.sshd import SSHDUnavailable, SSHServer, start_sshd
from tests.storage.rig import Rig


class SFTPRig(Rig):
    type = "sftp"

    def __init__(self, server: SSHServer, base: str):
        self.server = server
        self.base = base  # this session's folder, relative to the login folder

    # -- settings -------------------------------------------------------------------------

    def connection(self, name: str = "sftp-test", **overrides) -> dict:
        """Settings that log in with the ed25519 key and trust the known_hosts file."""
        return {
            "name": name, "type": "sftp", "host": self.server.host, "port": self.server.port,
            "username": self.server.user, "auth_method": "KEY",
            "private_key": self.server.ed25519_key.text, "known_hosts": str(self.server.known_hosts),
            "path": self.base, **overrides,
        }

    def target_settings(self, name: str, prefix: str) -> dict:
        return self.connection(name, path=f"{self.base}/{prefix}")

    def bad_credentials(self, name: str, prefix: str) -> tuple[dict, list[str]]:
        wrong = "wrong-" + uuid.uuid4().hex
        settings = self.connection(name, path=f"{self.base}/{prefix}", auth_method="PASSWORD",
                                   password=wrong, private_key=None)
        del settings["private_key"]
        return settings, [wrong, self.server.password]

    # -- behind the adapter's back ----------------------------------------------------------

    def local_path(self, full_key: str) -> Path:
        return self.server.home / full_key  # an absolute key stays absolute

    def list_keys(self, prefix: str) -> list[str]:
        root = self.server.home / self.base / prefix
        if not root.exists():
            return []
        return sorted(
            str(Path(dirpath, name).relative_to(self.server.home))
            for dirpath, _dirs, files in os.walk(root) for name in files
        )

    def raw_read(self, full_key: str) -> bytes:
        return self.local_path(full_key).read_bytes()

    def raw_write(self, full_key: str, data: bytes) -> None:
        path = self.local_path(full_key)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        with open(path, "r+b") as fh:  # same inode, same owner: only the bytes change
            fh.truncate(0)
            fh.write(data)

    def raw_delete(self, full_key: str) -> None:
        self.local_path(full_key).unlink()

    def plant(self, full_key: str, data: bytes) -> Path:
        """Create a file as the test user would have (owner included), folders as needed."""
        path = self.local_path(full_key)
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        owner = self.server.home.stat()
        for created in [path, *missing]:
            os.chown(created, owner.st_uid, owner.st_gid)
        return path

    def everything(self) -> set[str]:
        """Files and folders in the test user's whole home."""
        found = set()
        for dirpath, dirs, files in os.walk(self.server.home):
            found.update(str(Path(dirpath, name).relative_to(self.server.home)) for name in dirs + files)
        return found

    def cleanup(self) -> None:
        shutil.rmtree(self.server.home / self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def rig_sftp(tmp_path_factory) -> SFTPRig:
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except SSHDUnavailable as exc:
        pytest.fail(f"cannot start the test sshd: {exc}", pytrace=False)
    rig = SFTPRig(server, f"rtk-tests-{uuid.uuid4().hex[:10]}")
    yield rig
    rig.cleanup()
    server.stop()


RIGS: dict[str, type[Rig]] = {"sftp": SFTPRig}
