"""The pipeline's errors and the exit codes they lead to."""

from __future__ import annotations

# Exit codes (documented in the README).
EXIT_OK = 0  # everything asked for is archived and verified
EXIT_FAILURES = 1  # some files failed, are lost or at risk; the others were archived
EXIT_USAGE = 2  # bad configuration or command line; nothing was done
EXIT_LOCKED = 3  # another run holds the ledger's lock; nothing was done
EXIT_API = 4  # the RealtimeKit API refused or could not be reached; nothing could be listed
EXIT_INTERNAL = 70  # an unexpected error (a bug): one line on stderr, the details in a crash file
EXIT_INTERRUPTED = 130  # stopped by SIGINT/SIGTERM; in-flight work was abandoned cleanly


class RtkArchiveError(Exception):
    """Base of every error the pipeline reports as one clear line."""


class ConfigError(RtkArchiveError):
    """The configuration or the command line is unusable."""


class LockedError(RtkArchiveError):
    """Another run is using the same ledger."""


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
