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
def read_only(source: Path, at: Path | None = None) -> Iterator[Path]:
    """`source` bind-mounted read-only at `at` (by default over itself, in place; `source` may be
    a folder or a single file): writes fail with EROFS, even for root (chmod proves nothing)."""
    at = source if at is None else at
    if at is not source:
        source.mkdir(parents=True, exist_ok=True)
        at.mkdir(parents=True, exist_ok=True)
    _run("mount", "--bind", str(source), str(at))
    try:
        _run("mount", "-o", "remount,bind,ro", str(at))
        yield at
    finally:
        _unmount(at)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of `folder` until at most `leave` bytes are free (0: until it
    refuses another byte, ENOSPC). Returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for piece in (1 << 20, 4096, 1):  # big pieces first, then the last scraps
            while True:
                stats = os.statvfs(folder)
                free = stats.f_bavail * stats.f_frsize
                if leave and free <= leave:
                    return filler
                try:
                    fh.write(b"\0" * (min(piece, free - leave) if leave else piece))
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break  # full at this piece size: try smaller ones
    return filler
