"""The local rig: a folder of the test's own, looked at directly."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.storage.rig import Rig


class LocalRig(Rig):
    type = "local"
    has_credentials = False

    def __init__(self, root: Path):
        self.root = root
        self.folder = root  # a local key is relative to the target's folder

    def target_settings(self, name: str, prefix: str) -> dict:
        self.folder = self.root / prefix
        return {"name": name, "type": "local", "path": str(self.folder)}

    def list_keys(self, prefix: str) -> list[str]:
        """Keys relative to the target's folder (root/prefix), as the adapter reports them."""
        base = self.root / prefix
        if not base.exists():
            return []
        return sorted(
            str(Path(dirpath, f).relative_to(base))
            for dirpath, _dirs, files in os.walk(base) for f in files
        )

    def raw_read(self, full_key: str) -> bytes:
        return (self.folder / full_key).read_bytes()

    def raw_write(self, full_key: str, data: bytes) -> None:
        path = self.folder / full_key
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        with open(path, "r+b") as fh:  # keep the inode and its xattr, change the bytes
            fh.truncate(0)
            fh.write(data)

    def raw_delete(self, full_key: str) -> None:
        (self.folder / full_key).unlink()

    def plant(self, full_key: str, data: bytes) -> None:
        path = self.folder / full_key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def everything(self) -> set[str]:
        """Files and folders under the rig's root, the folder above every target's."""
        found = set()
        for dirpath, dirs, files in os.walk(self.root):
            found.update(str(Path(dirpath, name).relative_to(self.root)) for name in dirs + files)
        return found


@pytest.fixture
def rig_local(tmp_path_factory) -> LocalRig:
    return LocalRig(tmp_path_factory.mktemp("local-target"))


RIGS: dict[str, type[Rig]] = {"local": LocalRig}
