"""Failing environments made for real (as root): another file system (tmpfs, an ext4 image on a
loop device), a full file system, a read-only bind mount. Each is a context manager that always
unmounts. Tests that use them skip, with the reason, only when not running as root (CI is root)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting file systems needs root (CI runs as root)")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def _unmount(path: Path) -> None:
    try:
        _run("umount", str(path))
    except subprocess.CalledProcessError:
        _run("umount", "-l", str(path))  # still busy (a server's open file): detach it anyway


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m") -> Iterator[Path]:
    """A fresh tmpfs of `size` mounted at `path` (created)."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def ext4(path: Path, image: Path, size: str = "96M") -> Iterator[Path]:
    """An ext4 file system in the file `image`, mounted at `path` through a loop device."""
    if shutil.which("mkfs.ext4") is None:
        pytest.fail("mkfs.ext4 is missing (Debian: apt-get install e2fsprogs)", pytrace=False)
    _run("truncate", "-s", size, str(image))
    _run("mkfs.ext4", "-q", "-F", str(image))
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-o", "loop", str(image), str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only(source: Path, path: Path) -> Iterator[Path]:
    """`source` bind-mounted read-only at `path`: writes fail with EROFS, even for root."""
    source.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "--bind", str(source), str(path))
    try:
        _run("mount", "-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _unmount(path)


def fill(folder: Path) -> None:
    """Fill the file system under `folder` until it refuses another byte (ENOSPC)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # big pieces first, then the last scraps
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
