"""The pipeline's errors and the exit codes they lead to."""

from __future__ import annotations

import errno
from pathlib import Path

# Exit codes (documented in the README).
EXIT_OK = 0  # everything asked for is archived and verified
EXIT_FAILURES = 1  # some files failed, are lost or at risk; the others were archived
EXIT_USAGE = 2  # bad configuration or command line; nothing was done
EXIT_LOCKED = 3  # another run holds the ledger's lock; nothing was done
EXIT_API = 4  # the RealtimeKit API refused or could not be reached; nothing could be listed
EXIT_BUDGET = 5  # stopped at the time or transfer budget (--max-duration, --max-transfer): work remains
EXIT_INTERNAL = 70  # an unexpected error (a bug): one line on stderr, the details in a crash file
EXIT_BOOKKEEPING = 74  # the ledger, its lock or the audit log cannot be used (sysexits' EX_IOERR)
EXIT_INTERRUPTED = 130  # stopped by SIGINT/SIGTERM; in-flight work was abandoned cleanly

# Every exit code the command line can return; nothing else ever leaves main().
EXIT_CODES = (EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_LOCKED, EXIT_API, EXIT_BUDGET, EXIT_INTERNAL,
              EXIT_BOOKKEEPING, EXIT_INTERRUPTED)


class RtkArchiveError(Exception):
    """Base of every error the pipeline reports as one clear line."""


class ConfigError(RtkArchiveError):
    """The configuration or the command line is unusable."""


class LockedError(RtkArchiveError):
    """Another run is using the same ledger."""


class BookkeepingError(RtkArchiveError):
    """The ledger, its lock file or the audit log cannot be used: the message is one line
    naming the path and what is wrong with it."""


class Interrupted(RtkArchiveError):
    """The run was asked to stop (SIGINT/SIGTERM)."""


class DownloadError(RtkArchiveError):
    """A recording file could not be downloaded completely and correctly."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class FileUnavailable(DownloadError):
    """RealtimeKit no longer serves the file (its URL expired for good, or it has none)."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class VerificationError(RtkArchiveError):
    """A stored copy does not match the downloaded file."""


_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
_OS_REASONS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error",
}


def os_reason(exc: OSError) -> str:
    """An OSError in words a person acts on (the errno's meaning, without Python's repr)."""
    return _OS_REASONS.get(exc.errno, exc.strerror or exc.__class__.__name__)


def is_read_only(exc: OSError) -> bool:
    """The path exists (or could) but may not be written: a read-only mount or no permission."""
    return exc.errno in _READ_ONLY_ERRNOS


def blocking_file(folder: Path) -> Path | None:
    """The first part of `folder` that exists and is not a folder (a file in the way)."""
    for part in [folder, *folder.parents]:
        if part.exists():
            return None if part.is_dir() else part
    return None


def path_error(what: str, path: Path, exc: OSError, *, read_only_hint: str | None = None) -> BookkeepingError:
    """One line for an OS failure on one of the tool's own files: `what` failed because a file
    is in the way, or why; for a read-only place, with the hint of what still works there."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocker = blocking_file(path)
        if blocker is not None:
            return BookkeepingError(f"{what}: {blocker} is a file, not a folder")
    if is_read_only(exc) and read_only_hint:
        return BookkeepingError(f"{what}: {os_reason(exc)}; {read_only_hint}")
    return BookkeepingError(f"{what}: {os_reason(exc)}")
