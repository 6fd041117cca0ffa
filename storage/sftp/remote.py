"""Small operations on the SFTP server that paramiko leaves to its callers: mkdir -p, does a
path exist, remove if present, run a command and collect its output, and naming the remote path
in an error."""

from __future__ import annotations

import contextlib
import posixpath
import stat as stat_module
import time
from collections.abc import Iterator
from typing import Any

from storage.errors import PermanentStorageError


@contextlib.contextmanager
def at(path: str) -> Iterator[None]:
    """Name the remote path in an SFTP error: paramiko's carry only the status text."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = path
        raise


def run_command(channel: Any, command: str, timeout: float) -> tuple[int, bytes]:
    """Run `command`; return its exit status and standard output."""
    channel.settimeout(timeout)
    channel.exec_command(command)
    # EOF on stdin: an account forced into internal-sftp would otherwise wait for requests.
    channel.shutdown_write()
    output = bytearray()
    while chunk := channel.recv(65536):
        output += chunk
    deadline = time.monotonic() + timeout
    while not channel.exit_status_ready():
        if time.monotonic() > deadline:
            raise TimeoutError("no exit status from the remote command")
        time.sleep(0.01)
    return channel.recv_exit_status(), bytes(output)


def makedirs(sftp: Any, folder: str) -> None:
    """mkdir -p; another worker creating the same folder meanwhile is fine."""
    missing = []
    current = folder
    while current not in ("", "/") and not is_folder(sftp, current):
        missing.append(current)
        current = posixpath.dirname(current)
    for path in reversed(missing):
        try:
            with at(path):
                sftp.mkdir(path)
        except OSError:
            if not is_folder(sftp, path):  # not a lost race: a real failure
                raise


def is_folder(sftp: Any, path: str) -> bool:
    try:
        with at(path):
            mode = sftp.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat_module.S_ISDIR(mode):
        raise PermanentStorageError(f"{path} exists on the server but is not a folder")
    return True


def exists(sftp: Any, path: str) -> bool:
    try:
        with at(path):
            sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def remove_if_present(sftp: Any, path: str) -> int:
    try:
        with at(path):
            sftp.remove(path)
    except FileNotFoundError:
        return 0  # removed meanwhile by another sweep
    return 1
