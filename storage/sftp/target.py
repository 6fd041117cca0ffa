"""`sftp`: a folder on an SSH server the customer runs (RealtimeKit's storage_config type "sftp").

Safety comes from the SSH side, not from the storage side: the server's host key is always
verified (a known_hosts file or one pinned key; never trust-on-first-use), and a file appears
under its final name only once complete: it is written to a hidden temporary name in the same
folder and then renamed with SFTP's RENAME, which refuses an existing name.

SFTP has no object metadata, so there is no stored SHA-256 to read back. When the server lets
the user run commands, `sha256sum` on the server hashes the stored bytes: independent evidence,
better than a copy of our own claim. Without it, stat reports `sha256=None` and the pipeline
checks the size only.

paramiko is imported only when a connection is opened, so the rest of rtk-archive never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import shlex
import stat as stat_module
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from storage.errors import (
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
    require_sdk,
)
from storage.sftp import remote
from storage.sftp.errors import classify
from storage.sftp.login import load_private_key, open_session
from storage.sftp.pool import Session, SessionPool, dropped
from storage.sftp.settings import SFTPSettings
from storage.stream import GrowingFile, SequentialReader
from storage.target import PROBE_PREFIX, Target, abandoned, is_partial, partial_name
from storage.values import LocalFile, Retention, StoredObject

log = logging.getLogger(__name__)

T = TypeVar("T")

SOURCE_CHUNK = 1 << 20  # local reads; paramiko cuts them into pipelined 32 KiB SFTP writes
MAX_CONNECTIONS = 4  # per target: enough for the pipeline's workers, modest for MaxStartups
PREFETCH_REQUESTS = 64  # outstanding 32 KiB reads while streaming a file back
# The slowest rate at which we still expect a server to hash a file (a small NAS): bounds how
# long stat waits for `sha256sum` before calling the server stuck.
SLOWEST_HASH_RATE = 20 << 20
_SHA256SUM_LINE = re.compile(rb"^\\?([0-9a-f]{64}) ")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class SFTPTarget(Target):
    type = "sftp"
    settings_model = SFTPSettings

    def __init__(self, settings: SFTPSettings):
        super().__init__(settings)
        self.settings: SFTPSettings = settings
        self._pool = SessionPool(self._open_session, MAX_CONNECTIONS, wait=max(settings.timeout, 60.0))
        self._pkey: Any = None
        self._pkey_lock = threading.Lock()
        self._checksum_unavailable = False  # set once the server shows it cannot run sha256sum

    # -- naming ---------------------------------------------------------------------------

    def describe(self) -> str:
        path = self.settings.path
        return self._uri(path if path.startswith("/") else f"/~/{path}".rstrip("/"))

    def _uri(self, absolute_path: str) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"sftp://{quote(self.settings.username, safe='')}@{host}:{self.settings.port}{quote(absolute_path)}"

    # -- connecting -----------------------------------------------------------------------

    def _open_session(self) -> Session:
        paramiko = require_sdk("paramiko", "paramiko", target=self.name)
        credentials = self._credentials(paramiko)  # a bad key fails here, before any network
        return open_session(paramiko, self.settings, credentials)

    def _credentials(self, paramiko: Any) -> dict:
        if self.settings.auth_method == "PASSWORD":
            return {"password": self.settings.password.get_secret_value()}
        with self._pkey_lock:
            if self._pkey is None:
                passphrase = self.settings.password.get_secret_value() if self.settings.password else None
                with self._errors("loading private_key"):
                    self._pkey = load_private_key(paramiko, self.settings.key_text(), passphrase)
            return {"pkey": self._pkey}

    # -- running an operation on a connection ----------------------------------------------

    def _call(self, operation: Callable[[Session], T]) -> T:
        """Run `operation` on a pooled connection; if a reused connection turns out to have
        dropped, reconnect once and run it again (each operation is safe to repeat)."""
        with self._pool.lease() as lease:
            try:
                return operation(lease.session)
            except Exception as exc:
                if not dropped(lease, exc):
                    raise
                lease.broken = True
                log.info("target '%s': SFTP connection dropped (%s); reconnecting once", self.name,
                         type(exc).__name__)
        with self._pool.lease(fresh=True) as lease:
            return operation(lease.session)

    # -- hooks ------------------------------------------------------------------------------

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        # Two steps, each retried on its own after a dropped connection: a drop while the
        # server hashes the stored file must not send the whole file again.
        self._call(lambda session: self._transfer_on(session, file, full_key))
        return self._call(lambda session: self._stat_on(session, full_key))

    def _upload_growing(self, source: GrowingFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        # Written as the bytes arrive, renamed only after the source's verified end (SFTP keeps
        # no metadata: the server's sha256sum is the evidence). A reconnect starts a fresh
        # reader from byte 0.
        self._call(lambda session: self._transfer_on(
            session, _Growing(source.reader() if source.tell() else source), full_key))
        return self._call(lambda session: self._stat_on(session, full_key))

    def _transfer_on(self, session: Session, file: LocalFile, full_key: str) -> None:
        final = session.absolute(full_key)
        folder, name = posixpath.split(final)
        remote.makedirs(session.sftp, folder)
        temp = posixpath.join(folder, partial_name(name))
        renamed = False
        try:
            self._send(session.sftp, file, temp)
            if self.settings.retention_mode == "READ_ONLY":
                with remote.at(temp):  # before the rename: the final name is never writable
                    session.sftp.chmod(temp, 0o444)
            renamed = self._publish(session, temp, final, file)
        finally:
            if not renamed:
                self._remove_temporary(session, temp)

    def _send(self, sftp: Any, file: LocalFile, temp: str) -> None:
        with remote.at(temp):
            with file.open() as source, sftp.open(temp, "wbx") as handle:
                # Pipelined: writes go out without waiting for each reply, so throughput is not
                # bound by round trips; replies (and errors such as a full disk) arrive by close.
                handle.set_pipelined(True)
                while chunk := _read_source(source, file):
                    handle.write(chunk)
            stored = sftp.stat(temp).st_size
        if stored != file.size:
            raise RetryableStorageError(
                f"the server holds {stored} bytes of {file.size} after the transfer; upload abandoned"
            )

    def _publish(self, session: Session, temp: str, final: str, file: LocalFile) -> bool:
        """Rename `temp` to `final`, never over another file: True once renamed, False when
        the very same file is already there (our own rename whose reply a dropped connection
        lost, or an identical upload by another worker)."""
        # SFTP's RENAME refuses an existing name (draft-ietf-secsh-filexfer-02, 6.5; OpenSSH
        # uses link(2), atomically). posix-rename@openssh.com would overwrite, so it is not used.
        # The look first catches a server that ignores the rule, and gives a clear message.
        if remote.exists(session.sftp, final):
            return self._same_file_or_conflict(session, final, file)
        try:
            with remote.at(final):
                session.sftp.rename(temp, final)
        except OSError:
            if remote.exists(session.sftp, final):
                return self._same_file_or_conflict(session, final, file)
            raise
        return True

    def _same_file_or_conflict(self, session: Session, final: str, file: LocalFile) -> bool:
        size = session.sftp.stat(final).st_size
        if size == file.size and self._remote_sha256(session, final, size) == file.checksums.sha256:
            return False
        raise ObjectConflict(f"{self._uri(final)} appeared while uploading; not overwritten")

    def _remove_temporary(self, session: Session, temp: str) -> None:
        try:
            session.sftp.remove(temp)
        except FileNotFoundError:
            return  # never created, or already renamed: nothing to clean
        except Exception as exc:  # noqa: BLE001 - the upload's own error is the one to raise
            # Typically the connection is gone; the leftover is removed by the next sweep.
            log.warning("target '%s': could not remove temporary %s (%s); sweep_partials will",
                        self.name, self._uri(temp), type(exc).__name__)

    def _stat(self, full_key: str) -> StoredObject:
        return self._call(lambda session: self._stat_on(session, full_key))

    def _stat_on(self, session: Session, full_key: str) -> StoredObject:
        path = session.absolute(full_key)
        try:
            with remote.at(path):
                attrs = session.sftp.stat(path)
        except FileNotFoundError:
            raise NotFound(f"{self._uri(path)} not found", target=self.name) from None
        if not stat_module.S_ISREG(attrs.st_mode):
            raise PermanentStorageError(f"{self._uri(path)} is not a regular file", target=self.name)
        digest = self._remote_sha256(session, path, attrs.st_size)
        read_only = not attrs.st_mode & (stat_module.S_IWUSR | stat_module.S_IWGRP | stat_module.S_IWOTH)
        return StoredObject(
            key=full_key,
            uri=self._uri(path),
            size=attrs.st_size,
            sha256=digest,  # the server's own hash of the stored bytes: SFTP keeps no metadata
            native={"sha256": digest} if digest else {},
            retention=Retention(mode="READ_ONLY") if read_only else None,
        )

    def _remote_sha256(self, session: Session, path: str, size: int) -> str | None:
        if not self.settings.remote_checksum or self._checksum_unavailable:
            return None
        paramiko = sys.modules["paramiko"]
        try:
            channel = session.client.get_transport().open_session(timeout=self.settings.timeout)
        except paramiko.ChannelException as exc:  # exec sessions refused for this user
            self._give_up_checksums(f"the server refused a command session (code {exc.code})")
            return None
        with channel:
            status, output = remote.run_command(channel, f"sha256sum -- {shlex.quote(path)}",
                                          self.settings.timeout + size / SLOWEST_HASH_RATE)
        match = _SHA256SUM_LINE.match(output)
        if status == 0 and match:
            return match.group(1).decode()
        if self._sha256sum_runs(session):
            log.warning("target '%s': sha256sum of %s failed (status %s); this file is checked by "
                        "size only", self.name, self._uri(path), status)
        else:  # a shell-less account (nologin, ForceCommand internal-sftp, chroot), no sha256sum
            self._give_up_checksums(f"sha256sum exited with status {status}")
        return None

    def _sha256sum_runs(self, session: Session) -> bool:
        """Does hashing empty input work? Tells one unreadable file from no usable exec at all."""
        with session.client.get_transport().open_session(timeout=self.settings.timeout) as channel:
            status, output = remote.run_command(channel, "sha256sum </dev/null", self.settings.timeout)
        return status == 0 and output.startswith(EMPTY_SHA256.encode())

    def _give_up_checksums(self, reason: str) -> None:
        if not self._checksum_unavailable:
            self._checksum_unavailable = True
            log.warning("target '%s': remote sha256sum unavailable (%s); stored files are checked "
                        "by size only. Set remote_checksum = false to skip trying.", self.name, reason)

    def _delete(self, full_key: str) -> None:
        def remove(session: Session) -> None:
            path = session.absolute(full_key)
            with remote.at(path):
                session.sftp.remove(path)
            folder = posixpath.dirname(path)
            if posixpath.basename(folder) == PROBE_PREFIX:
                # The probe's own folder goes too, once empty; another probe's file keeps it.
                with contextlib.suppress(OSError):
                    session.sftp.rmdir(folder)
        self._call(remove)

    @contextlib.contextmanager
    def _open_read(self, full_key: str) -> Iterator[Any]:
        # The connection stays lent while the caller reads, so no other thread talks over it.
        for fresh in (False, True):
            with self._pool.lease(fresh=fresh) as lease:
                try:
                    handle = self._open_remote(lease.session, full_key)
                except Exception as exc:
                    if fresh or not dropped(lease, exc):
                        raise
                    lease.broken = True  # a reused connection had dropped: open a new one once
                    continue
                with handle:
                    yield handle
                return

    def _open_remote(self, session: Session, full_key: str) -> Any:
        path = session.absolute(full_key)
        try:
            with remote.at(path):
                handle = session.sftp.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"{self._uri(path)} not found", target=self.name) from None
        try:
            # Many reads in flight instead of one round trip per 32 KiB.
            handle.prefetch(max_concurrent_requests=PREFETCH_REQUESTS)
        except BaseException:
            handle.close()
            raise
        return handle

    def sweep_partials(self, older_than: float | None = None) -> int:
        with self._errors("sweep of partial uploads"):
            return self._call(lambda session: self._sweep_on(session, older_than))

    def _sweep_on(self, session: Session, older_than: float | None) -> int:
        removed = 0
        root = session.absolute(self.settings.path or ".")
        probe_folder = posixpath.join(root, PROBE_PREFIX)
        pending = [root]
        while pending:
            folder = pending.pop()
            try:
                with remote.at(folder):
                    entries = session.sftp.listdir_attr(folder)
            except FileNotFoundError:
                continue  # nothing was ever uploaded there
            for entry in entries:
                child = posixpath.join(folder, entry.filename)
                if stat_module.S_ISDIR(entry.st_mode):  # lstat: symlinked folders are not followed
                    pending.append(child)
                elif stat_module.S_ISREG(entry.st_mode) and (is_partial(entry.filename) or folder == probe_folder):
                    # (the latter: a probe object whose run was killed before it removed it)
                    if not abandoned(entry.filename, entry.st_mtime or 0, older_than):
                        continue  # still being written, by another process
                    removed += remote.remove_if_present(session.sftp, child)
            if folder == probe_folder:  # only when it was there: not a round trip per run for nothing
                with contextlib.suppress(OSError):  # once empty (in use by another probe: kept)
                    session.sftp.rmdir(probe_folder)
        return removed

    def close(self) -> None:
        self._pool.close()

    # -- errors -----------------------------------------------------------------------------

    def _classify(self, exc: Exception, action: str) -> StorageError:
        return classify(self.settings, exc, action)


class _Growing:
    """A GrowingFile as `_send` and `_publish` read a LocalFile: its stream, its size, and its
    digests once the download is verified."""

    def __init__(self, source: GrowingFile):
        self.source = source
        self.size = source.size
        self.path = "(the file being downloaded)"

    def open(self) -> contextlib.AbstractContextManager:
        # SequentialReader checks the bytes read against the verified file before the last.
        return contextlib.nullcontext(SequentialReader(self.source))

    @property
    def checksums(self):
        return self.source.result().checksums


def _read_source(source: Any, file: LocalFile) -> bytes:
    try:
        return source.read(SOURCE_CHUNK)
    except OSError as exc:
        raise RetryableStorageError(
            f"reading the local file {file.path} failed ({exc.strerror or exc}); upload abandoned"
        ) from exc
